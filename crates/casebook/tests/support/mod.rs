//! Running the real `casebook` binary in tests: one place that says how.

// Each test binary uses a part of this module.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Stdio};

/// `casebook --data-dir DIR …` with nothing inherited that would change its
/// configuration, and every listener on a free port (tests never take :5222, :5223,
/// :5280, :6380, :8081-8085, :8090, :8091, :8100 or udp :7946, so they run beside each other and beside a real `casebook up`).
/// Stdout and stderr are piped: a caller that does not read stderr of a long-running
/// child should set it to null, so a full pipe can never block the child's logging.
pub fn casebook(data_dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_casebook"));
    cmd.arg("--data-dir")
        .arg(data_dir)
        .env_remove("CASEBOOK_CONFIG")
        .env_remove("RUST_LOG")
        .env("CASEBOOK_WHATSAPP__PORT", "0")
        .env("CASEBOOK_CONTROL__TOXIPROXY_PORT", "0")
        .env("CASEBOOK_WHATSAPP__TLS_PORT", "0")
        .env("CASEBOOK_WHATSAPP__WS_PORT", "0")
        .env("CASEBOOK_UBER__RESP_PORT", "0")
        .env("CASEBOOK_UBER__HTTP_PORT", "0")
        .env("CASEBOOK_UBER__PRICING_PORT", "0")
        .env("CASEBOOK_UBER__GOSSIP_PORT", "0")
        .env("CASEBOOK_NETFLIX__ORIGIN_PORT", "0")
        .env("CASEBOOK_NETFLIX__PIPELINE_PORT", "0")
        .env("CASEBOOK_NETFLIX__PLAYBACK_PORT", "0")
        .env("CASEBOOK_NETFLIX__GATEWAY_PORT", "0")
        .env("CASEBOOK_NETFLIX__USERS_PORT", "0")
        .env("CASEBOOK_NETFLIX__CATALOG_PORT", "0")
        .env("CASEBOOK_NETFLIX__RECS_PORT", "0")
        .env("CASEBOOK_NETFLIX__BILLING_PORT", "0")
        .env("CASEBOOK_NETFLIX__EDGE_PORT", "0")
        .env("CASEBOOK_NETFLIX__ISP_PORT", "0")
        .env("CASEBOOK_AMAZON__HTTP_PORT", "0")
        // Every `up` makes the sample title: a short one from the synthetic
        // encoder, so tests that start the platform spend no CPU on ffmpeg (the
        // tests of the pipeline and of playback through the CDN ask for it).
        .env("CASEBOOK_NETFLIX__SAMPLE_DURATION", "4s")
        .env("CASEBOOK_NETFLIX__ENCODER", "synthetic")
        .env("CASEBOOK_NETFLIX__X264_PRESET", "ultrafast")
        // Small caches: a test platform holds several edges in one process.
        .env("CASEBOOK_NETFLIX__EDGE_MEMORY_BYTES", "8388608")
        .env("CASEBOOK_NETFLIX__EDGE_DISK_BYTES", "67108864")
        .env("CASEBOOK_NETFLIX__ISP_MEMORY_BYTES", "4194304")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// `casebook up` as it will be started; see [`Up::builder`].
pub struct UpBuilder {
    command: Command,
    up_args: Vec<String>,
}

impl UpBuilder {
    /// An argument of `up` itself, e.g. `--case`.
    pub fn up_arg(mut self, arg: &str) -> Self {
        self.up_args.push(arg.to_owned());
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.command.env(key, value);
        self
    }

    pub fn start(mut self) -> Up {
        use std::io::BufRead;
        let mut child = self
            .command
            .args(["--control-port", "0", "up"])
            .args(&self.up_args)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut first = String::new();
        // The reader is dropped after the first line: `up` must survive a closed stdout.
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let (url, token) = control_url(&first);
        Up { child, url, token }
    }
}

/// The first line `up` prints, `casebook control plane: http://ADDR/?token=T`, as
/// the base URL (`http://ADDR`) and the token.
pub fn control_url(first_line: &str) -> (String, String) {
    let signed_in = first_line
        .trim()
        .strip_prefix("casebook control plane: ")
        .unwrap_or_else(|| panic!("the control-plane URL first, got {first_line:?}"));
    let (url, token) = signed_in
        .split_once("/?token=")
        .unwrap_or_else(|| panic!("the URL carries the token, got {signed_in:?}"));
    (url.to_owned(), token.to_owned())
}

/// A call to the control plane's API with its token; any status comes back.
pub async fn admin_call(
    token: &str,
    method: http::Method,
    url: &str,
    body: Option<serde_json::Value>,
) -> casebook_kit::http_client::HttpResponse {
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::AUTHORIZATION,
        casebook_kit::http_client::bearer(token).unwrap(),
    );
    let body = match body {
        Some(body) => {
            headers.insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            serde_json::to_vec(&body).unwrap().into()
        }
        None => Vec::new().into(),
    };
    casebook_kit::http_client::HttpClient::default()
        .send(method, url, headers, body)
        .await
        .unwrap()
}

/// A `casebook up` child on free ports, killed (and reaped) when dropped, however the
/// test ends. Its log goes nowhere: nobody reads it, and a full pipe would block it.
pub struct Up {
    child: std::process::Child,
    /// The control plane's base URL, from the first line `up` prints.
    pub url: String,
    /// The installation's token, from the same line.
    pub token: String,
}

impl Up {
    pub fn start(data_dir: &Path) -> Self {
        Self::builder(data_dir).start()
    }

    /// An `up` to start with more settings (environment variables).
    pub fn builder(data_dir: &Path) -> UpBuilder {
        UpBuilder {
            command: casebook(data_dir),
            up_args: Vec::new(),
        }
    }

    /// `kill -9`: the process dies at once, mid-whatever; reaped here.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The main address of the (first) running instance of `service`.
    pub async fn address_of(&self, service: &str) -> String {
        self.find_address(service, None).await
    }

    /// The address of `service`'s instance in `region` (the `uber` replicas each
    /// serve their own region's cities).
    pub async fn address_in(&self, service: &str, region: &str) -> String {
        self.find_address(service, Some(region)).await
    }

    /// The service of every instance, in the admin API's order.
    pub async fn services(&self) -> Vec<String> {
        let instances = self.instances().await;
        let mut services: Vec<String> = instances
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["service"].as_str().unwrap().to_owned())
            .collect();
        services.sort();
        services.dedup();
        services
    }

    async fn instances(&self) -> serde_json::Value {
        // Every case starting at once (indexes, a sample encode, password hashing)
        // on two shared cores can hold the answer past the client's 5 s default.
        casebook_kit::http_client::HttpClient::new(std::time::Duration::from_secs(60))
            .get_json(&format!("{}/api/instances", self.url))
            .await
            .unwrap()
    }

    async fn find_address(&self, service: &str, region: Option<&str>) -> String {
        let instances = self.instances().await;
        let instance = instances
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["service"] == service && region.is_none_or(|r| i["region"] == r))
            .unwrap_or_else(|| panic!("no {service} instance ({region:?}) in {instances}"));
        instance["address"].as_str().unwrap().to_owned()
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
