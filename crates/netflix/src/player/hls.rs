//! The HLS playlists a player reads (RFC 8216): the master playlist's variants and
//! a media playlist's segments — the subset the pipeline writes and the edges
//! rewrite, read strictly.
//!
//! Read: `#EXTM3U` first; in a master playlist each `#EXT-X-STREAM-INF` (its
//! `BANDWIDTH` required, `RESOLUTION` and `CODECS` kept) followed by its URI line;
//! in a media playlist each `#EXTINF:<seconds>,` followed by its URI line, and
//! `#EXT-X-ENDLIST`. Other tags and comments are skipped. Every refusal names its
//! line ([`PlaylistError`]).
//!
//! Bounds: at most [`MAX_PLAYLIST_BYTES`] of text, [`MAX_VARIANTS`] variants and
//! [`MAX_SEGMENTS`] segments, a URI of at most
//! [`MAX_URI_LEN`] bytes, a segment of at most [`MAX_SEGMENT_SECS`].
//!
//! Not read: alternative renditions (`#EXT-X-MEDIA`), byte ranges, keys, live
//! playlists' sliding windows (a playlist without `#EXT-X-ENDLIST` is read as far
//! as it goes and marked unfinished).

use std::fmt::Write as _;
use std::time::Duration;

use super::MAX_SEGMENTS;

/// The most bytes of playlist text read.
pub const MAX_PLAYLIST_BYTES: usize = 4 << 20;
/// The most variants of a master playlist.
pub const MAX_VARIANTS: usize = 64;
/// The longest URI line.
pub const MAX_URI_LEN: usize = 2048;
/// The longest segment, in seconds.
pub const MAX_SEGMENT_SECS: f64 = 3600.0;

/// Why a playlist was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{reason}", if *line == 0 { String::new() } else { format!("line {line}: ") })]
pub struct PlaylistError {
    /// 1-based; 0 for the playlist as a whole.
    pub line: usize,
    pub reason: String,
}

fn refuse(line: usize, reason: impl Into<String>) -> PlaylistError {
    PlaylistError {
        line,
        reason: reason.into(),
    }
}

/// One variant of a master playlist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variant {
    pub bandwidth_bps: u64,
    pub resolution: Option<(u32, u32)>,
    pub codecs: Option<String>,
    pub uri: String,
}

/// A master playlist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterPlaylist {
    pub variants: Vec<Variant>,
}

/// One segment of a media playlist.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub duration: Duration,
    pub uri: String,
}

/// A media playlist.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaPlaylist {
    pub target_duration: Option<u64>,
    pub segments: Vec<Segment>,
    /// Whether `#EXT-X-ENDLIST` closed it.
    pub ended: bool,
}

/// The lines of a playlist, numbered, trimmed, blank ones skipped.
fn lines(text: &str) -> Result<impl Iterator<Item = (usize, &str)>, PlaylistError> {
    if text.len() > MAX_PLAYLIST_BYTES {
        return Err(refuse(
            0,
            format!("the playlist is over {MAX_PLAYLIST_BYTES} bytes"),
        ));
    }
    let mut numbered = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty())
        .peekable();
    match numbered.peek() {
        Some((_, "#EXTM3U")) => {
            numbered.next();
            Ok(numbered)
        }
        Some((line, _)) => Err(refuse(*line, "a playlist starts with #EXTM3U")),
        None => Err(refuse(0, "the playlist is empty")),
    }
}

fn uri_line(line: usize, uri: &str) -> Result<String, PlaylistError> {
    if uri.starts_with('#') {
        return Err(refuse(
            line,
            "expected a URI after the tag, found another tag",
        ));
    }
    if uri.len() > MAX_URI_LEN {
        return Err(refuse(line, format!("a URI is over {MAX_URI_LEN} bytes")));
    }
    if uri.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(refuse(
            line,
            "a URI may not contain spaces or control characters",
        ));
    }
    Ok(uri.to_owned())
}

/// Splits an attribute list (`A=1,B="x,y"`) into pairs.
fn attributes(line: usize, list: &str) -> Result<Vec<(&str, &str)>, PlaylistError> {
    let mut out = Vec::new();
    let mut rest = list;
    while !rest.is_empty() {
        let (name, after) = rest
            .split_once('=')
            .ok_or_else(|| refuse(line, format!("attribute `{rest}` has no value")))?;
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(refuse(line, format!("`{name}` is not an attribute name")));
        }
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted
                .find('"')
                .ok_or_else(|| refuse(line, format!("the value of {name} is not closed")))?;
            (&after[..end + 2], &quoted[end + 1..])
        } else {
            match after.find(',') {
                Some(comma) => (&after[..comma], &after[comma..]),
                None => (after, ""),
            }
        };
        out.push((name, value));
        rest = match next.strip_prefix(',') {
            Some(more) => more,
            None if next.is_empty() => "",
            None => return Err(refuse(line, format!("junk after the value of {name}"))),
        };
    }
    Ok(out)
}

impl MasterPlaylist {
    /// Reads a master playlist.
    pub fn parse(text: &str) -> Result<Self, PlaylistError> {
        let mut variants = Vec::new();
        let mut pending: Option<(usize, Variant)> = None;
        for (line, content) in lines(text)? {
            if let Some((_, mut variant)) = pending.take() {
                variant.uri = uri_line(line, content)?;
                variants.push(variant);
                continue;
            }
            if let Some(list) = content.strip_prefix("#EXT-X-STREAM-INF:") {
                if variants.len() == MAX_VARIANTS {
                    return Err(refuse(line, format!("more than {MAX_VARIANTS} variants")));
                }
                pending = Some((line, variant(line, list)?));
            } else if content.starts_with("#EXTINF") {
                return Err(refuse(line, "a media playlist, not a master playlist"));
            } else if !content.starts_with('#') {
                return Err(refuse(line, "a URI without #EXT-X-STREAM-INF before it"));
            }
        }
        if let Some((line, _)) = pending {
            return Err(refuse(line, "#EXT-X-STREAM-INF without a URI after it"));
        }
        if variants.is_empty() {
            return Err(refuse(0, "the master playlist has no variants"));
        }
        Ok(Self { variants })
    }

    /// The playlist as text (what [`parse`](Self::parse) reads back).
    pub fn render(&self) -> String {
        let mut out = String::from("#EXTM3U\n#EXT-X-VERSION:3\n");
        for v in &self.variants {
            let _ = write!(out, "#EXT-X-STREAM-INF:BANDWIDTH={}", v.bandwidth_bps);
            if let Some((w, h)) = v.resolution {
                let _ = write!(out, ",RESOLUTION={w}x{h}");
            }
            if let Some(codecs) = &v.codecs {
                let _ = write!(out, ",CODECS=\"{codecs}\"");
            }
            let _ = writeln!(out, "\n{}", v.uri);
        }
        out
    }
}

fn variant(line: usize, list: &str) -> Result<Variant, PlaylistError> {
    let mut variant = Variant {
        bandwidth_bps: 0,
        resolution: None,
        codecs: None,
        uri: String::new(),
    };
    for (name, value) in attributes(line, list)? {
        match name {
            "BANDWIDTH" => {
                variant.bandwidth_bps = value.parse().ok().filter(|b| *b > 0).ok_or_else(|| {
                    refuse(
                        line,
                        format!("BANDWIDTH `{value}` is not a positive integer"),
                    )
                })?;
            }
            "RESOLUTION" => {
                let (w, h) = value
                    .split_once('x')
                    .and_then(|(w, h)| Some((w.parse().ok()?, h.parse().ok()?)))
                    .ok_or_else(|| refuse(line, format!("RESOLUTION `{value}` is not WxH")))?;
                variant.resolution = Some((w, h));
            }
            "CODECS" => {
                let inner = value
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .ok_or_else(|| refuse(line, "CODECS must be a quoted string"))?;
                variant.codecs = Some(inner.to_owned());
            }
            _ => {}
        }
    }
    if variant.bandwidth_bps == 0 {
        return Err(refuse(line, "#EXT-X-STREAM-INF without BANDWIDTH"));
    }
    Ok(variant)
}

impl MediaPlaylist {
    /// Reads a media playlist.
    pub fn parse(text: &str) -> Result<Self, PlaylistError> {
        let mut playlist = Self {
            target_duration: None,
            segments: Vec::new(),
            ended: false,
        };
        let mut pending: Option<Duration> = None;
        for (line, content) in lines(text)? {
            if playlist.ended {
                return Err(refuse(line, "content after #EXT-X-ENDLIST"));
            }
            if let Some(duration) = pending.take() {
                let uri = uri_line(line, content)?;
                playlist.segments.push(Segment { duration, uri });
                continue;
            }
            if let Some(info) = content.strip_prefix("#EXTINF:") {
                if playlist.segments.len() == MAX_SEGMENTS {
                    return Err(refuse(line, format!("more than {MAX_SEGMENTS} segments")));
                }
                let seconds = info.split(',').next().unwrap_or("").trim();
                let duration = decimal_seconds(seconds)
                    .filter(|d| !d.is_zero() && d.as_secs_f64() <= MAX_SEGMENT_SECS)
                    .ok_or_else(|| {
                        refuse(
                            line,
                            format!("#EXTINF duration `{seconds}` is not a positive number of seconds up to {MAX_SEGMENT_SECS}"),
                        )
                    })?;
                pending = Some(duration);
            } else if let Some(target) = content.strip_prefix("#EXT-X-TARGETDURATION:") {
                playlist.target_duration = Some(target.trim().parse().map_err(|_| {
                    refuse(
                        line,
                        format!("#EXT-X-TARGETDURATION `{target}` is not a whole number"),
                    )
                })?);
            } else if content == "#EXT-X-ENDLIST" {
                playlist.ended = true;
            } else if content.starts_with("#EXT-X-STREAM-INF") {
                return Err(refuse(line, "a master playlist, not a media playlist"));
            } else if !content.starts_with('#') {
                return Err(refuse(line, "a URI without #EXTINF before it"));
            }
        }
        if pending.is_some() {
            return Err(refuse(0, "#EXTINF without a URI after it"));
        }
        if playlist.segments.is_empty() {
            return Err(refuse(0, "the media playlist has no segments"));
        }
        Ok(playlist)
    }

    /// The playlist as text (what [`parse`](Self::parse) reads back).
    pub fn render(&self) -> String {
        let mut out = String::from("#EXTM3U\n#EXT-X-VERSION:3\n");
        if let Some(target) = self.target_duration {
            let _ = writeln!(out, "#EXT-X-TARGETDURATION:{target}");
        }
        out.push_str("#EXT-X-PLAYLIST-TYPE:VOD\n");
        for s in &self.segments {
            // Nanosecond precision, so a rendered playlist reads back exactly.
            let _ = writeln!(
                out,
                "#EXTINF:{}.{:09},\n{}",
                s.duration.as_secs(),
                s.duration.subsec_nanos(),
                s.uri
            );
        }
        if self.ended {
            out.push_str("#EXT-X-ENDLIST\n");
        }
        out
    }

    /// The segments' durations.
    pub fn durations(&self) -> Vec<Duration> {
        self.segments.iter().map(|s| s.duration).collect()
    }
}

/// A decimal number of seconds (`4`, `4.000`, `2.5`), exact to the nanosecond
/// (further digits are cut).
fn decimal_seconds(text: &str) -> Option<Duration> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || whole.len() > 6 || !digits(whole) || !digits(fraction) {
        return None;
    }
    let mut nanos = 0u32;
    for (i, b) in fraction.bytes().take(9).enumerate() {
        nanos += u32::from(b - b'0') * 10u32.pow(8 - i as u32);
    }
    Some(Duration::new(whole.parse().ok()?, nanos))
}

/// `uri` as an absolute URL, relative to the playlist at `base` (an absolute
/// `http://host[:port]/path?query` URL).
pub fn resolve(base: &str, uri: &str) -> String {
    if uri.starts_with("http://") || uri.starts_with("https://") {
        return uri.to_owned();
    }
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    if uri.starts_with('/') {
        return format!("{}{uri}", &base[..path_start]);
    }
    let path_end = base[path_start..]
        .find(['?', '#'])
        .map_or(base.len(), |i| path_start + i);
    let dir_end = base[path_start..path_end]
        .rfind('/')
        .map_or(path_start, |i| path_start + i + 1);
    if dir_end == path_start {
        format!("{}/{uri}", &base[..path_start])
    } else {
        format!("{}{uri}", &base[..dir_end])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MASTER: &str = "#EXTM3U\n#EXT-X-VERSION:3\n\
        #EXT-X-STREAM-INF:BANDWIDTH=800000,RESOLUTION=640x360,CODECS=\"avc1.4d401e,mp4a.40.2\"\n\
        360p/index.m3u8\n\
        #EXT-X-STREAM-INF:BANDWIDTH=3000000,RESOLUTION=1280x720\n\
        /o/titles/a/720p/index.m3u8?exp=1&sig=ab\n";

    #[test]
    fn a_master_playlist_is_read_and_rendered_back() {
        let master = MasterPlaylist::parse(MASTER).unwrap();
        assert_eq!(master.variants.len(), 2);
        assert_eq!(
            master.variants[0].codecs.as_deref(),
            Some("avc1.4d401e,mp4a.40.2")
        );
        assert_eq!(master.variants[0].resolution, Some((640, 360)));
        assert_eq!(
            master.variants[1].uri,
            "/o/titles/a/720p/index.m3u8?exp=1&sig=ab"
        );
        assert_eq!(MasterPlaylist::parse(&master.render()).unwrap(), master);
    }

    #[test]
    fn a_media_playlist_is_read_and_rendered_back() {
        let text = "#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXTINF:4.000,\nseg00000.ts\n#EXTINF:2.5,\nseg00001.ts\n#EXT-X-ENDLIST\n";
        let media = MediaPlaylist::parse(text).unwrap();
        assert_eq!(
            media.durations(),
            [Duration::from_secs(4), Duration::from_millis(2500)]
        );
        assert!(media.ended);
        assert_eq!(MediaPlaylist::parse(&media.render()).unwrap(), media);
    }

    #[test]
    fn bad_playlists_are_refused_naming_the_line() {
        let cases = [
            ("", 0),
            ("seg.ts\n", 1),
            ("#EXTM3U\n#EXT-X-STREAM-INF:RESOLUTION=1x1\na.m3u8\n", 2),
            ("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=x\na.m3u8\n", 2),
            ("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=5\n", 2),
            ("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=5,CODECS=\"a\n", 2),
            ("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=5\n#EXT-X-FOO\n", 3),
            ("#EXTM3U\na.m3u8\n", 2),
            ("#EXTM3U\n", 0),
        ];
        for (text, line) in cases {
            let err = MasterPlaylist::parse(text).unwrap_err();
            assert_eq!(err.line, line, "{text:?}: {err}");
        }
        let media_cases = [
            ("#EXTM3U\n#EXTINF:0,\na.ts\n", 2),
            ("#EXTM3U\n#EXTINF:nan,\na.ts\n", 2),
            ("#EXTM3U\n#EXTINF:-1,\na.ts\n", 2),
            ("#EXTM3U\n#EXTINF:4,\na b.ts\n", 3),
            (
                "#EXTM3U\n#EXTINF:4,\na.ts\n#EXT-X-ENDLIST\n#EXTINF:4,\nb.ts\n",
                5,
            ),
            ("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=5\na.m3u8\n", 2),
            ("#EXTM3U\n#EXTINF:4,\n", 0),
        ];
        for (text, line) in media_cases {
            let err = MediaPlaylist::parse(text).unwrap_err();
            assert_eq!(err.line, line, "{text:?}: {err}");
        }
    }

    #[test]
    fn uris_resolve_against_the_playlist() {
        let base = "http://127.0.0.1:8085/o/titles/a/master.m3u8?exp=1&sig=ab";
        assert_eq!(
            resolve(base, "720p/index.m3u8"),
            "http://127.0.0.1:8085/o/titles/a/720p/index.m3u8"
        );
        assert_eq!(
            resolve(base, "/o/x?exp=2"),
            "http://127.0.0.1:8085/o/x?exp=2"
        );
        assert_eq!(resolve(base, "http://other/x"), "http://other/x");
        assert_eq!(resolve("http://h:1", "x.ts"), "http://h:1/x.ts");
    }
}
