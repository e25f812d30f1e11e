//! `casebook netflix ...`: the Netflix case's content pipeline from the command
//! line. `ingest` runs the pipeline in this process against the origin store
//! (the data dir's, or `[netflix] origin_store`), not through a running
//! `netflix-pipeline`: it works with or without `casebook up`, and a running
//! origin lists the title as soon as its catalog entry is written. `add-user`
//! likewise writes the user store directly (SQLite's WAL lets it share the file
//! with a running `netflix-users`).

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use casebook_kit::clock::SystemClock;
use casebook_netflix::origin::store::Origin;
use casebook_netflix::pipeline::encode::Source;
use casebook_netflix::pipeline::progress::Progress;
use casebook_netflix::pipeline::{Pipeline, title_for_name};
use casebook_netflix::users::AddUserError;

use crate::cli::NetflixCommand;
use crate::config::Config;

pub async fn run(config: &Config, command: NetflixCommand) -> anyhow::Result<ExitCode> {
    match command {
        NetflixCommand::Ingest {
            file,
            title,
            no_progress,
        } => ingest(config, &file, &title, no_progress).await,
        NetflixCommand::AddUser {
            email,
            password,
            profiles,
        } => add_user(config, &email, password, &profiles).await,
    }
}

async fn add_user(
    config: &Config,
    email: &str,
    password: Option<String>,
    profiles: &[String],
) -> anyhow::Result<ExitCode> {
    let password = super::whatsapp::password_or_stdin(password)?;
    let created = casebook_netflix::users::add_user(
        &config.netflix,
        &config.data_dir,
        email,
        &password,
        profiles,
        SystemClock::shared(),
    )
    .await;
    match created {
        Ok((account, profiles)) => {
            say!("{}", account.id);
            for profile in &profiles {
                eprintln!("  profile {} ({})", profile.id, profile.name);
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e @ (AddUserError::Invalid { .. } | AddUserError::DuplicateEmail(_))) => {
            eprintln!("casebook: {e}");
            Ok(ExitCode::from(2))
        }
        Err(AddUserError::Other(e)) => Err(e),
    }
}

async fn ingest(
    config: &Config,
    file: &Path,
    title: &str,
    no_progress: bool,
) -> anyhow::Result<ExitCode> {
    let (name, id) = match title_for_name(title) {
        Ok(named) => named,
        Err(problem) => {
            eprintln!("casebook: --title: {problem}");
            return Ok(ExitCode::from(2));
        }
    };
    let netflix = &config.netflix;
    let origin = Origin::open(netflix, &config.data_dir)?;
    // This process's own work directory: several ingests may run side by side.
    let work = config
        .data_dir
        .join("netflix")
        .join("ingest")
        .join(std::process::id().to_string());
    let pipeline = Pipeline::new(origin, netflix.clone(), &work, SystemClock::shared())?;
    eprintln!(
        "ingesting {} as `{id}` with the {} encoder",
        file.display(),
        pipeline.encoder().name()
    );
    let progress = Arc::new(Progress::default());
    let watcher = tokio::spawn(super::load::watch(progress.clone(), no_progress));
    let result = pipeline
        .ingest(&Source::file(file), &id, &name, &progress)
        .await;
    watcher.abort();
    let _ = std::fs::remove_dir_all(&work);
    match result {
        Ok(entry) => {
            say!(
                "published `{}` ({}): {} renditions, {:.1} s in {}-second segments, encoded by {}",
                entry.id,
                entry.name,
                entry.renditions.len(),
                entry.duration_secs,
                entry.segment_secs,
                entry.encoder
            );
            for r in &entry.renditions {
                say!(
                    "  {:>6} {:>4}x{:<4} {:>6} kbps peak  {}",
                    r.name,
                    r.width,
                    r.height,
                    r.bandwidth_bps / 1000,
                    r.codecs
                );
            }
            say!(
                "master playlist: {} (origin: GET /o/{})",
                entry.master_key,
                entry.master_key
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("casebook: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}
