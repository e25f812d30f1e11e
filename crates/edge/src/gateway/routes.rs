//! Route matching and the upstream path: pure functions over strings, fuzzed.
//!
//! Guarantees:
//! - a prefix matches itself and the paths below it on a segment boundary
//!   (`/api/users` matches `/api/users` and `/api/users/7`, never `/api/usersx`);
//!   `/` matches every path; the longest matching prefix wins;
//! - [`clean_path`] refuses a path that is not printable ASCII or that holds a
//!   `.` or `..` segment, also when spelled with `%2e`, `%2f`, `%5c` or `\`, so no
//!   path that passed the gateway can climb out of its route's prefix upstream;
//! - [`upstream_path`] always starts with `/` and keeps the query string as sent.
//!
//! Not guaranteed: that an upstream does not decode an encoded slash (`%2f`) inside
//! a segment into a separator of its own; it reaches the upstream as sent.

use http::uri::Authority;

/// The gateway's own view of its routes.
pub const ADMIN_ROUTES_PATH: &str = "/admin/routes";
/// Paths the gateway answers itself; no route may sit at or below them.
pub const RESERVED_PATHS: &[&str] = &["/admin", "/health", "/metrics"];
/// The longest request path (with its query) the gateway routes.
pub const MAX_PATH_BYTES: usize = 8 * 1024;

/// Where a route's requests go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The nearest `UP` instance of a service, through discovery.
    Service(String),
    /// A fixed upstream, with a base path joined in front of every request path.
    Url {
        authority: Authority,
        base_path: String,
    },
}

impl Target {
    /// Reads `http://host:port[/base]` (no query, no fragment, no credentials).
    pub fn parse_url(url: &str) -> Result<Target, String> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| format!("`{url}` is not a URL: {e}"))?;
        if uri.scheme_str() != Some("http") {
            return Err(format!("`{url}` must start with http:// (no TLS upstream)"));
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| format!("`{url}` has no host"))?;
        if authority.as_str().contains('@') {
            return Err(format!("`{url}` must not carry credentials"));
        }
        if uri.query().is_some() || url.contains('#') {
            return Err(format!("`{url}` must not have a query or a fragment"));
        }
        let base_path = uri.path().trim_end_matches('/').to_owned();
        if !base_path.is_empty() && clean_path(&base_path).is_err() {
            return Err(format!("`{url}` has an unclean path"));
        }
        Ok(Target::Url {
            authority,
            base_path,
        })
    }
}

/// Why a request path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path must start with '/'")]
    NotAbsolute,
    #[error("the path is longer than {MAX_PATH_BYTES} bytes")]
    TooLong,
    #[error("the path holds a byte that is not printable ASCII")]
    NotPrintable,
    #[error("the path holds a `.` or `..` segment")]
    DotSegment,
}

/// Checks a request path (without its query): see the module docs.
pub fn clean_path(path: &str) -> Result<(), PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(PathError::TooLong);
    }
    if !path.bytes().all(|b| b.is_ascii_graphic()) || path.contains(['?', '#']) {
        return Err(PathError::NotPrintable);
    }
    if !path.contains(['%', '\\']) {
        // Nothing encoded: the segments are as they read.
        if path.split('/').any(|s| s == "." || s == "..") {
            return Err(PathError::DotSegment);
        }
        return Ok(());
    }
    // Decode only what could form a dot segment, as a lenient upstream would.
    let decoded = path
        .replace("%2e", ".")
        .replace("%2E", ".")
        .replace("%2f", "/")
        .replace("%2F", "/")
        .replace("%5c", "/")
        .replace("%5C", "/")
        .replace('\\', "/");
    if decoded.split('/').any(|s| s == "." || s == "..") {
        return Err(PathError::DotSegment);
    }
    Ok(())
}

/// Whether `prefix` matches `path` (on a segment boundary; `/` matches all).
pub fn covers(prefix: &str, path: &str) -> bool {
    prefix == "/"
        || path == prefix
        || (path.starts_with(prefix) && path.as_bytes().get(prefix.len()) == Some(&b'/'))
}

/// The path and query sent upstream: the prefix cut when `strip`, the target's
/// base path in front. `path_and_query` must start with `prefix` as [`covers`] says.
pub fn upstream_path(prefix: &str, strip: bool, base_path: &str, path_and_query: &str) -> String {
    let rest = if strip && prefix != "/" {
        &path_and_query[prefix.len().min(path_and_query.len())..]
    } else {
        path_and_query
    };
    let mut out = String::with_capacity(base_path.len() + rest.len() + 1);
    out.push_str(base_path);
    if !rest.starts_with('/') {
        // `/api/users` itself, or `/api/users?x`: the upstream's root.
        if base_path.is_empty() || !rest.is_empty() {
            out.push('/');
        }
    }
    out.push_str(rest);
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// Routes by prefix, the longest first. Bounded by the configuration (at most
/// [`super::config::MAX_ROUTES`]): a scan of a few prefixes beats any index.
#[derive(Debug, Clone)]
pub struct RouteTable<T> {
    routes: Vec<(String, T)>,
}

impl<T> RouteTable<T> {
    /// The table of `(prefix, route)` pairs.
    pub fn new(routes: impl IntoIterator<Item = (String, T)>) -> Self {
        let mut routes: Vec<(String, T)> = routes.into_iter().collect();
        routes.sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
        Self { routes }
    }

    /// The route of `path` (no query): the longest prefix that covers it.
    pub fn find(&self, path: &str) -> Option<(&str, &T)> {
        self.routes
            .iter()
            .find(|(prefix, _)| covers(prefix, path))
            .map(|(prefix, route)| (prefix.as_str(), route))
    }

    /// Every route, longest prefix first.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &T)> {
        self.routes.iter().map(|(p, r)| (p.as_str(), r))
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_prefix_on_a_segment_boundary_wins() {
        let table = RouteTable::new([
            ("/".to_owned(), "root"),
            ("/api".to_owned(), "api"),
            ("/api/users".to_owned(), "users"),
        ]);
        let find = |p: &str| table.find(p).map(|(_, r)| *r);
        assert_eq!(find("/api/users/7"), Some("users"));
        assert_eq!(find("/api/users"), Some("users"));
        assert_eq!(find("/api/usersx"), Some("api"));
        assert_eq!(find("/apix"), Some("root"));
        assert_eq!(find("/"), Some("root"));
        let no_root = RouteTable::new([("/api".to_owned(), 1)]);
        assert!(no_root.find("/ap").is_none());
        assert!(no_root.find("/").is_none());
    }

    #[test]
    fn the_upstream_path_cuts_the_prefix_and_keeps_the_query() {
        assert_eq!(
            upstream_path("/api/users", true, "", "/api/users/7?x=1"),
            "/7?x=1"
        );
        assert_eq!(upstream_path("/api/users", true, "", "/api/users"), "/");
        assert_eq!(upstream_path("/api/users", true, "", "/api/users?x"), "/?x");
        assert_eq!(
            upstream_path("/api/users", false, "", "/api/users/7"),
            "/api/users/7"
        );
        assert_eq!(
            upstream_path("/api/users", true, "/v1", "/api/users/7"),
            "/v1/7"
        );
        assert_eq!(
            upstream_path("/api/users", true, "/v1", "/api/users"),
            "/v1"
        );
        assert_eq!(
            upstream_path("/api/users", true, "/v1", "/api/users?q"),
            "/v1/?q"
        );
        assert_eq!(upstream_path("/", true, "", "/a?b"), "/a?b");
        assert_eq!(upstream_path("/", true, "/v1", "/a"), "/v1/a");
    }

    #[test]
    fn dot_segments_are_refused_however_they_are_spelled() {
        for bad in [
            "/api/../admin",
            "/api/./x",
            "/api/%2e%2e/admin",
            "/api/%2E./admin",
            "/api/..%2fadmin",
            "/api/x%2f..%2f..%2fadmin",
            "/api/..\\admin",
            "/api/..%5cadmin",
            "/..",
        ] {
            assert_eq!(clean_path(bad), Err(PathError::DotSegment), "{bad}");
        }
        assert_eq!(clean_path("api"), Err(PathError::NotAbsolute));
        assert_eq!(clean_path("/a b"), Err(PathError::NotPrintable));
        assert_eq!(clean_path("/é"), Err(PathError::NotPrintable));
        for good in ["/", "/api/users/7", "/a/...", "/a/.b", "/a..b/c", "/a%2fb"] {
            assert_eq!(clean_path(good), Ok(()), "{good}");
        }
    }

    #[test]
    fn url_targets_are_plain_http_with_an_optional_base_path() {
        assert_eq!(
            Target::parse_url("http://127.0.0.1:9000/v1/").unwrap(),
            Target::Url {
                authority: "127.0.0.1:9000".parse().unwrap(),
                base_path: "/v1".into()
            }
        );
        for bad in [
            "https://x:1",
            "x:1",
            "http://u:p@x:1",
            "http://x:1/?q",
            "http://x:1/a/../b",
            "/only/a/path",
        ] {
            assert!(Target::parse_url(bad).is_err(), "{bad}");
        }
    }
}
