//! `casebook whatsapp ...`: account administration for the WhatsApp case.

use std::io::BufRead as _;
use std::process::ExitCode;

use anyhow::Context as _;
use casebook_whatsapp::auth::{AccountCommand, run_account_command};

use crate::cli::WhatsappCommand;
use crate::config::Config;

pub fn run(config: &Config, command: WhatsappCommand) -> anyhow::Result<ExitCode> {
    let command = match command {
        WhatsappCommand::AddUser {
            jid,
            password,
            iterations,
        } => AccountCommand::Add {
            jid,
            password: password_or_stdin(password)?,
            iterations,
        },
        WhatsappCommand::RemoveUser { jid } => AccountCommand::Remove { jid },
        WhatsappCommand::Passwd { jid, password } => AccountCommand::Passwd {
            jid,
            password: password_or_stdin(password)?,
        },
        WhatsappCommand::ListUsers { domain } => AccountCommand::List { domain },
    };
    print!("{}", run_account_command(&config.data_dir, command)?);
    Ok(ExitCode::SUCCESS)
}

/// The password from the argument, or from the first line of standard input.
pub(crate) fn password_or_stdin(password: Option<String>) -> anyhow::Result<String> {
    match password {
        Some(password) if password != "-" => Ok(password),
        _ => {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .context("reading the password from standard input")?;
            Ok(line.trim_end_matches(['\r', '\n']).to_string())
        }
    }
}
