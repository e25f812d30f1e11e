//! Who may call the control plane: the installation's token, and the `Host` and
//! `Origin` checks that keep web pages in the user's browser out.
//!
//! - **The token.** One per installation: 32 random bytes, hex, in
//!   `DATA_DIR/control.token` (created at the first start with mode 0600, reused
//!   afterwards; delete the file to rotate it). [`load_or_create`] and [`read`] are
//!   the one place that touches the file.
//! - **[`AccessPolicy`]** is the axum layer every route of the control plane sits
//!   behind ([`AccessPolicy::protect`]). In order, it answers:
//!   1. `403` when the `Host` header is not the bound address (DNS rebinding: a page
//!      from `evil.example` resolving to 127.0.0.1 still sends `Host: evil.example`).
//!      On loopback the accepted names are `127.0.0.1:PORT`, `localhost:PORT` and
//!      `[::1]:PORT`; bound to one address, that address too; bound to every
//!      interface (`0.0.0.0`), any `Host` — the token guards every call there.
//!   2. `GET /?token=…` with the right token: `303` back to `/` with an `HttpOnly`,
//!      `SameSite=Strict` cookie carrying it (named after the port: see [`TOKEN_COOKIE`]), so the HTML index (and the API links on
//!      it) work from the one URL `casebook up` prints, as Jupyter does.
//!   3. `403` when a state-changing request (anything but GET/HEAD/OPTIONS) carries an
//!      `Origin` other than `http://{Host}` (cross-site request forgery).
//!   4. `401` with `WWW-Authenticate: Bearer` and the kit's JSON error when the call
//!      needs the token and carries none or a wrong one. State-changing calls always
//!      need it; reads need it only when bound beyond loopback. The token comes as
//!      `Authorization: Bearer <token>` or as the cookie of step 2, and is compared in
//!      constant time.
//!
//! [`AccessPolicy::browserless_on_loopback`] is the opt-in for APIs that stock tools
//! call without a token (a Toxiproxy-compatible chaos API, say): on loopback no
//! token is asked, but every request carrying an `Origin` header — which only a
//! browser sends — is refused; beyond loopback the token is required as above.
//!
//! Not guaranteed: secrecy on the wire (no TLS; binding beyond loopback is refused
//! unless `control.allow_insecure_bind` forces it), or protection from other local
//! users who can read the data directory.

use std::fmt;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use casebook_kit::api::ApiError;
use rand::RngCore;

/// The token file's name, directly under the data directory.
pub const TOKEN_FILE: &str = "control.token";
/// The cookie the HTML index sets from `?token=` is this, `_` and the bound port:
/// browsers scope cookies by host, not port, so two control planes on one host
/// must not overwrite each other's.
pub const TOKEN_COOKIE: &str = "casebook_control_token";
/// Random bytes in a generated token (hex: twice as many characters).
const TOKEN_BYTES: usize = 32;
/// The longest token accepted from a file, the configuration or a request.
const MAX_TOKEN_LEN: usize = 256;

/// The installation's secret. Its `Debug` never shows it; it derefs to its text.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct Token(Arc<str>);

impl TryFrom<String> for Token {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        Self::parse(&text)
    }
}

impl std::ops::Deref for Token {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(…)")
    }
}

impl Token {
    /// A fresh token: 32 random bytes from the OS-seeded generator, hex.
    pub fn generate() -> Self {
        let mut bytes = [0u8; TOKEN_BYTES];
        rand::rng().fill_bytes(&mut bytes);
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Self(hex.into())
    }

    /// A token as written by a person or a file: 1–256 visible ASCII characters
    /// (what fits an `Authorization` header, a cookie and a URL unescaped).
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("the token is empty".into());
        }
        if text.len() > MAX_TOKEN_LEN {
            return Err(format!(
                "the token is longer than {MAX_TOKEN_LEN} characters"
            ));
        }
        if !text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
        {
            return Err("the token may hold only letters, digits and `-._~`".into());
        }
        Ok(Self(text.into()))
    }

    /// The token's text, to send it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `candidate` is this token, in time independent of where they differ.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        let expected = self.0.as_bytes();
        // The length is not secret (every generated token has the same one).
        expected.len() == candidate.len()
            && std::hint::black_box(
                expected
                    .iter()
                    .zip(candidate)
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b)),
            ) == 0
    }
}

/// Where the installation's token lives.
pub fn token_path(data_dir: &Path) -> PathBuf {
    data_dir.join(TOKEN_FILE)
}

/// The token in `data_dir`, if the file exists. A file others may read is used, with
/// a warning: the token is only as secret as the file.
pub fn read(data_dir: &Path) -> io::Result<Option<Token>> {
    let path = token_path(data_dir);
    #[cfg(unix)]
    if let Ok(metadata) = std::fs::metadata(&path) {
        let mode = std::os::unix::fs::PermissionsExt::mode(&metadata.permissions());
        if mode & 0o077 != 0 {
            tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777), "the control token file is readable by others; chmod 600 it or delete it to rotate the token");
        }
    }
    match std::fs::read_to_string(&path) {
        Ok(text) => Token::parse(&text).map(Some).map_err(|reason| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {reason}", path.display()),
            )
        }),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(io::Error::new(
            err.kind(),
            format!("{}: {err}", path.display()),
        )),
    }
}

/// The token in `data_dir`, created (mode 0600, fsynced) if there is none yet.
pub fn load_or_create(data_dir: &Path) -> io::Result<Token> {
    if let Some(token) = read(data_dir)? {
        return Ok(token);
    }
    std::fs::create_dir_all(data_dir)?;
    let token = Token::generate();
    let path = token_path(data_dir);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(&path) {
        Ok(mut file) => {
            file.write_all(token.as_str().as_bytes())?;
            file.write_all(b"\n")?;
            file.sync_all()?;
            Ok(token)
        }
        // Another process created it first: use theirs.
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => read(data_dir)?
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "the token file vanished")),
        Err(err) => Err(io::Error::new(
            err.kind(),
            format!("{}: {err}", path.display()),
        )),
    }
}

/// Fills `control.token` for a process of the platform: an explicit token (from the
/// configuration file or `CASEBOOK_CONTROL__TOKEN`) wins; otherwise the data
/// directory's file is read — and created when `create` (the process runs the
/// control plane). A process that finds none calls without a token.
pub fn resolve_token(
    control: &mut crate::ControlConfig,
    data_dir: &Path,
    create: bool,
) -> anyhow::Result<()> {
    if control.token.is_some() {
        return Ok(());
    }
    let token = if create {
        Some(load_or_create(data_dir)?)
    } else {
        read(data_dir)?
    };
    control.token = token;
    Ok(())
}

/// The URL that opens the HTML index already signed in: `{base}/?token=…`.
pub fn index_url(base_url: &str, token: Option<&str>) -> String {
    let base = base_url.trim_end_matches('/');
    match token {
        Some(token) => format!("{base}/?token={token}"),
        None => format!("{base}/"),
    }
}

/// The access rules of one listener; see the module docs.
#[derive(Debug, Clone)]
pub struct AccessPolicy {
    token: Token,
    /// `{TOKEN_COOKIE}_{port}`.
    cookie_name: String,
    /// `Host` values accepted (lowercase); `None` accepts any.
    allowed_hosts: Option<Vec<String>>,
    /// Whether reads need the token too (bound beyond loopback).
    reads_need_token: bool,
    /// The browserless opt-in: no token on loopback, no `Origin` at all.
    browserless: bool,
}

impl AccessPolicy {
    /// The control plane's rules for a listener bound at `bound`.
    pub fn for_bound(bound: SocketAddr, token: Token) -> Self {
        let port = bound.port();
        let loopback_names = [
            format!("127.0.0.1:{port}"),
            format!("localhost:{port}"),
            format!("[::1]:{port}"),
        ];
        let allowed_hosts = if bound.ip().is_unspecified() {
            None
        } else {
            let mut hosts: Vec<String> = loopback_names.to_vec();
            let own = bound.to_string();
            if !hosts.contains(&own) {
                hosts.push(own);
            }
            if port == 80 {
                // Browsers leave the default port out.
                let bare: Vec<String> = hosts
                    .iter()
                    .filter_map(|h| h.strip_suffix(":80").map(str::to_owned))
                    .collect();
                hosts.extend(bare);
            }
            Some(hosts)
        };
        Self {
            token,
            cookie_name: format!("{TOKEN_COOKIE}_{port}"),
            allowed_hosts,
            reads_need_token: !bound.ip().is_loopback(),
            browserless: false,
        }
    }

    /// The opt-in for tool-facing APIs (e.g. a Toxiproxy-compatible one): on loopback
    /// no token, but any request with an `Origin` header is refused; beyond loopback
    /// the same rules as [`AccessPolicy::for_bound`].
    pub fn browserless_on_loopback(bound: SocketAddr, token: Token) -> Self {
        Self {
            browserless: bound.ip().is_loopback(),
            ..Self::for_bound(bound, token)
        }
    }

    /// `router` behind these rules (add it last, so it runs before every route).
    pub fn protect(self, router: Router) -> Router {
        router.layer(axum::middleware::from_fn_with_state(
            Arc::new(self),
            enforce,
        ))
    }

    fn host_allowed(&self, host: &str) -> bool {
        match &self.allowed_hosts {
            None => true,
            Some(hosts) => hosts.iter().any(|h| h.eq_ignore_ascii_case(host)),
        }
    }

    fn presented_token_matches(&self, headers: &HeaderMap) -> Option<bool> {
        let presented = bearer(headers).or_else(|| cookie(headers, &self.cookie_name))?;
        Some(self.token.matches(presented.as_bytes()))
    }
}

fn is_state_changing(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (key, value) = pair.trim().split_once('=')?;
            (key == name).then_some(value)
        })
}

fn query_token(query: Option<&str>) -> Option<&str> {
    query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))
}

fn forbidden(error: &str) -> Response {
    ApiError::new(StatusCode::FORBIDDEN, error).into_response()
}

fn unauthorized(error: &str, challenge: &'static str) -> Response {
    let mut response = ApiError::new(StatusCode::UNAUTHORIZED, error).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    response
}

async fn enforce(
    State(policy): State<Arc<AccessPolicy>>,
    request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if !policy.host_allowed(host) {
        return forbidden(&format!(
            "Host `{host}` is not this control plane's address (a DNS-rebound name?); use its address"
        ));
    }
    let origin = headers.get(header::ORIGIN);
    if policy.browserless && origin.is_some() {
        return forbidden("this API refuses requests from web pages (an `Origin` header was sent)");
    }
    if let Some(origin) = origin
        && is_state_changing(request.method())
    {
        let same_origin = format!("http://{host}");
        let origin_text = origin.to_str().unwrap_or("");
        if !origin_text.eq_ignore_ascii_case(&same_origin) {
            return forbidden(&format!(
                "cross-site request refused: Origin `{origin_text}` is not {same_origin}"
            ));
        }
    }
    if request.method() == Method::GET
        && request.uri().path() == "/"
        && let Some(offered) = query_token(request.uri().query())
    {
        if !policy.token.matches(offered.as_bytes()) {
            return unauthorized(
                "the `token` in the URL is not this control plane's token",
                "Bearer error=\"invalid_token\"",
            );
        }
        // Strip the token from the address bar; the cookie carries it from now on.
        let cookie = format!(
            "{}={}; HttpOnly; SameSite=Strict; Path=/",
            policy.cookie_name,
            policy.token.as_str()
        );
        let mut response = (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            response.headers_mut().insert(header::SET_COOKIE, value);
        }
        return response;
    }
    let needs_token =
        !policy.browserless && (is_state_changing(request.method()) || policy.reads_need_token);
    if needs_token {
        match policy.presented_token_matches(headers) {
            Some(true) => {}
            Some(false) => {
                return unauthorized(
                    "wrong token: send the one in DATA_DIR/control.token as `Authorization: Bearer <token>`",
                    "Bearer error=\"invalid_token\"",
                );
            }
            None => {
                return unauthorized(
                    "this call needs the control plane's token: send `Authorization: Bearer <token>` (the token is in DATA_DIR/control.token)",
                    "Bearer",
                );
            }
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_64_hex_characters_and_differ() {
        let (a, b) = (Token::generate(), Token::generate());
        assert_eq!(a.as_str().len(), 64);
        assert!(a.as_str().bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        assert_eq!(Token::parse(a.as_str()).unwrap(), a);
        assert!(!format!("{a:?}").contains(a.as_str()));
    }

    #[test]
    fn matching_is_exact() {
        let token = Token::parse("abc").unwrap();
        assert!(token.matches(b"abc"));
        assert!(!token.matches(b"abd"));
        assert!(!token.matches(b"ab"));
        assert!(!token.matches(b"abcd"));
        assert!(Token::parse("").is_err());
        assert!(Token::parse("a b").is_err());
        assert!(Token::parse(&"a".repeat(300)).is_err());
    }

    #[test]
    fn bearer_and_cookie_are_read() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer  xyz"),
        );
        assert_eq!(bearer(&headers), Some("xyz"));
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; casebook_control_token=t0k; b=2"),
        );
        assert_eq!(cookie(&headers, TOKEN_COOKIE), Some("t0k"));
        assert_eq!(query_token(Some("x=1&token=abc")), Some("abc"));
    }

    #[test]
    fn hosts_follow_the_bound_address() {
        let token = Token::generate();
        let loopback = AccessPolicy::for_bound("127.0.0.1:7700".parse().unwrap(), token.clone());
        assert!(loopback.host_allowed("localhost:7700"));
        assert!(loopback.host_allowed("[::1]:7700"));
        assert!(!loopback.host_allowed("evil.example:7700"));
        assert!(!loopback.host_allowed("localhost:7701"));
        assert!(!loopback.reads_need_token);
        let everywhere = AccessPolicy::for_bound("0.0.0.0:7700".parse().unwrap(), token);
        assert!(everywhere.host_allowed("control.internal:7700"));
        assert!(everywhere.reads_need_token);
    }

    async fn status_of(
        policy: AccessPolicy,
        method: Method,
        headers: &[(&str, &str)],
    ) -> StatusCode {
        use tower::ServiceExt;
        let router = Router::new().route(
            "/proxies",
            axum::routing::get(|| async { "[]" }).post(|| async { "made" }),
        );
        let mut request = Request::builder().method(method).uri("/proxies");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        policy
            .protect(router)
            .oneshot(request.body(axum::body::Body::empty()).unwrap())
            .await
            .unwrap()
            .status()
    }

    #[tokio::test]
    async fn the_browserless_opt_in_needs_no_token_on_loopback_but_refuses_any_origin() {
        let token = Token::generate();
        let host = ("host", "127.0.0.1:8474");
        let loopback = || {
            AccessPolicy::browserless_on_loopback("127.0.0.1:8474".parse().unwrap(), token.clone())
        };
        assert_eq!(
            status_of(loopback(), Method::POST, &[host]).await,
            StatusCode::OK
        );
        assert_eq!(
            status_of(
                loopback(),
                Method::GET,
                &[host, ("origin", "http://127.0.0.1:8474")]
            )
            .await,
            StatusCode::FORBIDDEN,
            "even a same-origin page is a browser"
        );
        assert_eq!(
            status_of(loopback(), Method::POST, &[("host", "evil.example:8474")]).await,
            StatusCode::FORBIDDEN
        );
        // Beyond loopback the opt-in does not apply: the token is required.
        let everywhere =
            AccessPolicy::browserless_on_loopback("0.0.0.0:8474".parse().unwrap(), token.clone());
        assert_eq!(
            status_of(everywhere, Method::GET, &[host]).await,
            StatusCode::UNAUTHORIZED
        );
    }
}
