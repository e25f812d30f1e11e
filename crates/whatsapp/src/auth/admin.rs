//! Operator account commands behind `casebook whatsapp add-user | remove-user |
//! list-users | passwd`.
//!
//! Guarantees: the same validation and storage as [`Accounts`] (a JID names the
//! domain's store under the data dir); the output never contains a password or a
//! secret. Not here: argument parsing (the binary's CLI does that).

use std::path::Path;

use super::accounts::{AccountError, Accounts, AccountsConfig, parse_bare_jid};

/// One operator command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountCommand {
    /// Create `jid` with `password`, deriving secrets with `iterations`.
    Add {
        jid: String,
        password: String,
        iterations: u32,
    },
    /// Delete `jid`.
    Remove { jid: String },
    /// Replace `jid`'s password.
    Passwd { jid: String, password: String },
    /// The accounts of `domain`, one bare JID per line.
    List { domain: String },
}

/// Runs `command` against the stores under `data_dir`; returns what to print.
pub fn run_account_command(
    data_dir: &Path,
    command: AccountCommand,
) -> Result<String, AccountError> {
    match command {
        AccountCommand::Add {
            jid,
            password,
            iterations,
        } => {
            let (local, domain) = parse_bare_jid(&jid)?;
            let config = AccountsConfig {
                iterations,
                ..AccountsConfig::default()
            };
            let accounts = Accounts::open(data_dir, &domain, config)?;
            let local = accounts.add(&local, &password)?;
            Ok(format!("added {local}@{domain}\n"))
        }
        AccountCommand::Remove { jid } => {
            let (local, domain) = parse_bare_jid(&jid)?;
            Accounts::open(data_dir, &domain, AccountsConfig::default())?.remove(&local)?;
            Ok(format!("removed {local}@{domain}\n"))
        }
        AccountCommand::Passwd { jid, password } => {
            let (local, domain) = parse_bare_jid(&jid)?;
            Accounts::open(data_dir, &domain, AccountsConfig::default())?
                .change_password(&local, &password)?;
            Ok(format!("changed the password of {local}@{domain}\n"))
        }
        AccountCommand::List { domain } => {
            let accounts = Accounts::open(data_dir, &domain, AccountsConfig::default())?;
            let domain = accounts.domain().to_string();
            Ok(accounts
                .list()
                .into_iter()
                .map(|local| format!("{local}@{domain}\n"))
                .collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::ScramHash;

    #[test]
    fn add_list_passwd_remove_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let run = |c| run_account_command(dir.path(), c);
        let add = |jid: &str| AccountCommand::Add {
            jid: jid.into(),
            password: "s3cret".into(),
            iterations: 4096,
        };
        assert_eq!(
            run(add("Alice@Example.com")).unwrap(),
            "added alice@example.com\n"
        );
        run(add("bob@example.com")).unwrap();
        run(add("carol@other.org")).unwrap();
        assert!(matches!(
            run(add("alice@example.com")),
            Err(AccountError::Exists(_))
        ));
        let list = run(AccountCommand::List {
            domain: "example.com".into(),
        })
        .unwrap();
        assert_eq!(list, "alice@example.com\nbob@example.com\n");
        assert!(!list.contains("s3cret"));
        run(AccountCommand::Passwd {
            jid: "alice@example.com".into(),
            password: "n3w".into(),
        })
        .unwrap();
        let accounts =
            Accounts::open(dir.path(), "example.com", AccountsConfig::default()).unwrap();
        let alice = accounts.get("alice").unwrap();
        assert!(alice.scram_sha1.verify_password(ScramHash::Sha1, "n3w"));
        run(AccountCommand::Remove {
            jid: "bob@example.com".into(),
        })
        .unwrap();
        assert!(matches!(
            run(AccountCommand::Remove {
                jid: "bob@example.com".into()
            }),
            Err(AccountError::NotFound(_))
        ));
        assert!(matches!(
            run(add("no-domain")),
            Err(AccountError::InvalidJid { .. })
        ));
        let weak = AccountCommand::Add {
            jid: "dave@example.com".into(),
            password: "pw".into(),
            iterations: 100,
        };
        assert!(matches!(run(weak), Err(AccountError::Iterations(100))));
    }
}
