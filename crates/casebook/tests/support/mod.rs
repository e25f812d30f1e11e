//! Running the real `casebook` binary in tests: one place that says how.

use std::path::Path;
use std::process::{Command, Stdio};

/// `casebook --data-dir DIR …` with nothing inherited that would change its
/// configuration, and every listener on a free port (tests never take :5222, :5223,
/// :5280, :6380, :8090 or :8091, so they run beside each other and beside a real `casebook up`).
/// Stdout and stderr are piped: a caller that does not read stderr of a long-running
/// child should set it to null, so a full pipe can never block the child's logging.
pub fn casebook(data_dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_casebook"));
    cmd.arg("--data-dir")
        .arg(data_dir)
        .env_remove("CASEBOOK_CONFIG")
        .env_remove("RUST_LOG")
        .env("CASEBOOK_WHATSAPP__PORT", "0")
        .env("CASEBOOK_WHATSAPP__TLS_PORT", "0")
        .env("CASEBOOK_WHATSAPP__WS_PORT", "0")
        .env("CASEBOOK_UBER__RESP_PORT", "0")
        .env("CASEBOOK_UBER__HTTP_PORT", "0")
        .env("CASEBOOK_UBER__PRICING_PORT", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}
