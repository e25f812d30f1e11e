//! HLS playlists (RFC 8216): the master and media playlists the pipeline writes,
//! and a strict parser that reads them back (and reads ffmpeg's).
//!
//! Written form (canonical): `#EXTM3U`, `#EXT-X-VERSION:3`, then for a media
//! playlist `#EXT-X-TARGETDURATION`, `#EXT-X-MEDIA-SEQUENCE`,
//! `#EXT-X-PLAYLIST-TYPE:VOD`, `#EXT-X-INDEPENDENT-SEGMENTS`, one
//! `#EXTINF:<secs>.<micros>,` + URI per segment and `#EXT-X-ENDLIST`; for a master
//! playlist one `#EXT-X-STREAM-INF` (BANDWIDTH, AVERAGE-BANDWIDTH, RESOLUTION,
//! FRAME-RATE, CODECS) + URI per variant. URIs are relative (`720p/index.m3u8`,
//! `seg00001.ts`): the edges rewrite them.
//!
//! Parser guarantees: input beyond [`MAX_PLAYLIST_BYTES`], a line beyond
//! [`MAX_LINE_BYTES`], more than [`MAX_SEGMENTS`] segments or [`MAX_VARIANTS`]
//! variants is refused, so no input sizes an allocation past those bounds;
//! every error names its line; what parses renders back to text that parses to the
//! same value (the fuzz target `playlist` checks it: `crate::fuzz_checks`). The parser enforces RFC 8216's
//! MUSTs that players rely on: `#EXTM3U` first, `EXT-X-TARGETDURATION` present and
//! not below any rounded `EXTINF`, every `EXTINF` and `EXT-X-STREAM-INF` followed by
//! a URI, `BANDWIDTH` present, no duplicated attribute, no control characters.
//! Unknown tags and comments are skipped, as clients must.
//!
//! Not kept: `EXTINF` titles, `EXT-X-MEDIA` renditions, byte ranges, keys, maps,
//! discontinuities and every other tag this pipeline does not write.

use std::fmt::{self, Write as _};

/// The largest playlist the parser reads.
pub const MAX_PLAYLIST_BYTES: usize = 4 << 20;
/// The longest line.
pub const MAX_LINE_BYTES: usize = 4096;
/// The most segments in a media playlist (a 4-second ladder: 111 hours).
pub const MAX_SEGMENTS: usize = 100_000;
/// The most variants in a master playlist.
pub const MAX_VARIANTS: usize = 64;
/// Seconds beyond this in a duration or frame rate are refused (a year), so the
/// sum of every segment's microseconds fits a `u64`.
const MAX_SECONDS: u64 = 366 * 24 * 3600;

/// The HLS MIME type.
pub const CONTENT_TYPE: &str = "application/vnd.apple.mpegurl";

/// A segment's file name, `seg{n:05}.ts`.
pub fn segment_name(n: usize) -> String {
    format!("seg{n:05}.ts")
}

/// Why a playlist was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("playlist line {line}: {reason}")]
pub struct ParseError {
    /// 1-based; 0 for the whole input.
    pub line: usize,
    pub reason: String,
}

fn fail<T>(line: usize, reason: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError {
        line,
        reason: reason.into(),
    })
}

/// A variant's resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolution {
    pub width: u32,
    pub height: u32,
}

/// One `EXT-X-STREAM-INF` and its URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variant {
    pub uri: String,
    /// Peak segment bitrate, bits/s.
    pub bandwidth: u64,
    pub average_bandwidth: Option<u64>,
    pub resolution: Option<Resolution>,
    /// Frames per second × 1000.
    pub frame_rate_milli: Option<u64>,
    /// RFC 6381 codecs, e.g. `avc1.640028,mp4a.40.2`.
    pub codecs: Option<String>,
}

/// A master (multivariant) playlist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterPlaylist {
    pub version: u64,
    pub independent_segments: bool,
    pub variants: Vec<Variant>,
}

/// `EXT-X-PLAYLIST-TYPE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlaylistType {
    Vod,
    Event,
}

/// One media segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaSegment {
    /// The `EXTINF` duration in microseconds (finer digits are dropped).
    pub duration_us: u64,
    pub uri: String,
}

/// A media playlist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaPlaylist {
    pub version: u64,
    /// Seconds; every segment's duration rounds to at most this.
    pub target_duration: u64,
    pub media_sequence: u64,
    pub playlist_type: Option<PlaylistType>,
    pub independent_segments: bool,
    /// `EXT-X-ENDLIST`: no segment will be added (VOD).
    pub ended: bool,
    pub segments: Vec<MediaSegment>,
}

impl MediaPlaylist {
    /// A VOD playlist of these segments, its target duration the smallest that
    /// RFC 8216 allows (every duration rounded to the nearest second) and at least
    /// `nominal_secs`.
    pub fn vod(segments: Vec<MediaSegment>, nominal_secs: u64) -> Self {
        let longest = segments
            .iter()
            .map(|s| rounded_secs(s.duration_us))
            .max()
            .unwrap_or(0);
        Self {
            version: 3,
            target_duration: longest.max(nominal_secs),
            media_sequence: 0,
            playlist_type: Some(PlaylistType::Vod),
            independent_segments: true,
            ended: true,
            segments,
        }
    }

    /// The sum of the segments' durations.
    pub fn duration_us(&self) -> u64 {
        self.segments
            .iter()
            .fold(0u64, |sum, s| sum.saturating_add(s.duration_us))
    }
}

/// A duration rounded to the nearest whole second, as `EXT-X-TARGETDURATION` is
/// compared (halves round up).
pub fn rounded_secs(us: u64) -> u64 {
    us.saturating_add(500_000) / 1_000_000
}

fn micros_text(us: u64) -> String {
    format!("{}.{:06}", us / 1_000_000, us % 1_000_000)
}

impl fmt::Display for MasterPlaylist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "#EXTM3U")?;
        writeln!(f, "#EXT-X-VERSION:{}", self.version)?;
        if self.independent_segments {
            writeln!(f, "#EXT-X-INDEPENDENT-SEGMENTS")?;
        }
        for v in &self.variants {
            let mut attrs = format!("BANDWIDTH={}", v.bandwidth);
            if let Some(avg) = v.average_bandwidth {
                let _ = write!(attrs, ",AVERAGE-BANDWIDTH={avg}");
            }
            if let Some(r) = v.resolution {
                let _ = write!(attrs, ",RESOLUTION={}x{}", r.width, r.height);
            }
            if let Some(fr) = v.frame_rate_milli {
                let _ = write!(attrs, ",FRAME-RATE={}.{:03}", fr / 1000, fr % 1000);
            }
            if let Some(codecs) = &v.codecs {
                let _ = write!(attrs, ",CODECS=\"{codecs}\"");
            }
            writeln!(f, "#EXT-X-STREAM-INF:{attrs}")?;
            writeln!(f, "{}", v.uri)?;
        }
        Ok(())
    }
}

impl fmt::Display for MediaPlaylist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "#EXTM3U")?;
        writeln!(f, "#EXT-X-VERSION:{}", self.version)?;
        writeln!(f, "#EXT-X-TARGETDURATION:{}", self.target_duration)?;
        writeln!(f, "#EXT-X-MEDIA-SEQUENCE:{}", self.media_sequence)?;
        match self.playlist_type {
            Some(PlaylistType::Vod) => writeln!(f, "#EXT-X-PLAYLIST-TYPE:VOD")?,
            Some(PlaylistType::Event) => writeln!(f, "#EXT-X-PLAYLIST-TYPE:EVENT")?,
            None => {}
        }
        if self.independent_segments {
            writeln!(f, "#EXT-X-INDEPENDENT-SEGMENTS")?;
        }
        for s in &self.segments {
            writeln!(f, "#EXTINF:{},", micros_text(s.duration_us))?;
            writeln!(f, "{}", s.uri)?;
        }
        if self.ended {
            writeln!(f, "#EXT-X-ENDLIST")?;
        }
        Ok(())
    }
}

/// The lines of a playlist, numbered, after the checks every playlist gets.
fn lines(text: &str) -> Result<Vec<(usize, &str)>, ParseError> {
    if text.len() > MAX_PLAYLIST_BYTES {
        return fail(0, format!("larger than {MAX_PLAYLIST_BYTES} bytes"));
    }
    let mut out = Vec::new();
    for (i, line) in text.split('\n').enumerate() {
        let number = i + 1;
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.len() > MAX_LINE_BYTES {
            return fail(number, format!("longer than {MAX_LINE_BYTES} bytes"));
        }
        if line.chars().any(|c| c.is_control() && c != '\t') {
            return fail(number, "a control character");
        }
        let line = line.trim();
        if !line.is_empty() {
            out.push((number, line));
        }
    }
    match out.first() {
        Some((_, "#EXTM3U")) => Ok(out),
        _ => fail(1, "the first line must be #EXTM3U"),
    }
}

/// A tag line split into name and value (`#EXT-X-VERSION:3` → (`EXT-X-VERSION`, `3`)).
fn tag(line: &str) -> Option<(&str, &str)> {
    let body = line.strip_prefix('#').filter(|b| b.starts_with("EXT"))?;
    Some(body.split_once(':').unwrap_or((body, "")))
}

/// Parses a master playlist.
pub fn parse_master(text: &str) -> Result<MasterPlaylist, ParseError> {
    let lines = lines(text)?;
    let mut version = None;
    let mut independent_segments = false;
    let mut variants = Vec::new();
    let mut pending: Option<(usize, Variant)> = None;
    for &(n, line) in &lines[1..] {
        if let Some((name, value)) = tag(line) {
            // Tags may sit between EXT-X-STREAM-INF and its URI; a second
            // STREAM-INF may not.
            if pending.is_some() && name == "EXT-X-STREAM-INF" {
                return fail(n, "EXT-X-STREAM-INF without a URI before it");
            }
            match name {
                "EXT-X-VERSION" => set_once(&mut version, n, name, integer(n, value)?)?,
                "EXT-X-INDEPENDENT-SEGMENTS" => independent_segments = true,
                "EXT-X-STREAM-INF" => pending = Some((n, variant(n, value)?)),
                "EXTINF"
                | "EXT-X-TARGETDURATION"
                | "EXT-X-MEDIA-SEQUENCE"
                | "EXT-X-ENDLIST"
                | "EXT-X-PLAYLIST-TYPE" => {
                    return fail(
                        n,
                        format!("{name} in a master playlist (a media playlist?)"),
                    );
                }
                _ => {}
            }
        } else if line.starts_with('#') {
            continue;
        } else {
            let Some((_, mut v)) = pending.take() else {
                return fail(n, "a URI without EXT-X-STREAM-INF before it");
            };
            if variants.len() == MAX_VARIANTS {
                return fail(n, format!("more than {MAX_VARIANTS} variants"));
            }
            v.uri = line.to_owned();
            variants.push(v);
        }
    }
    if let Some((n, _)) = pending {
        return fail(n, "EXT-X-STREAM-INF without a URI after it");
    }
    if variants.is_empty() {
        return fail(0, "no variant (EXT-X-STREAM-INF)");
    }
    Ok(MasterPlaylist {
        version: version.unwrap_or(1),
        independent_segments,
        variants,
    })
}

/// Parses a media playlist.
pub fn parse_media(text: &str) -> Result<MediaPlaylist, ParseError> {
    let lines = lines(text)?;
    let mut version = None;
    let mut target = None;
    let mut sequence = None;
    let mut playlist_type = None;
    let mut independent_segments = false;
    let mut ended = false;
    let mut segments = Vec::new();
    let mut pending: Option<(usize, u64)> = None;
    for &(n, line) in &lines[1..] {
        if let Some((name, value)) = tag(line) {
            match name {
                "EXT-X-VERSION" => set_once(&mut version, n, name, integer(n, value)?)?,
                "EXT-X-TARGETDURATION" => set_once(&mut target, n, name, integer(n, value)?)?,
                "EXT-X-MEDIA-SEQUENCE" => set_once(&mut sequence, n, name, integer(n, value)?)?,
                "EXT-X-PLAYLIST-TYPE" => {
                    let kind = match value {
                        "VOD" => PlaylistType::Vod,
                        "EVENT" => PlaylistType::Event,
                        other => return fail(n, format!("unknown playlist type {other:?}")),
                    };
                    set_once(&mut playlist_type, n, name, kind)?;
                }
                "EXT-X-INDEPENDENT-SEGMENTS" => independent_segments = true,
                "EXT-X-ENDLIST" => ended = true,
                "EXTINF" => {
                    if pending.is_some() {
                        return fail(n, "EXTINF without a URI before it");
                    }
                    let duration = value.split_once(',').map_or(value, |(d, _)| d);
                    pending = Some((n, duration_us(n, duration)?));
                }
                "EXT-X-STREAM-INF" => {
                    return fail(
                        n,
                        "EXT-X-STREAM-INF in a media playlist (a master playlist?)",
                    );
                }
                _ => {}
            }
        } else if line.starts_with('#') {
            continue;
        } else {
            let Some((_, duration_us)) = pending.take() else {
                return fail(n, "a URI without EXTINF before it");
            };
            if segments.len() == MAX_SEGMENTS {
                return fail(n, format!("more than {MAX_SEGMENTS} segments"));
            }
            segments.push(MediaSegment {
                duration_us,
                uri: line.to_owned(),
            });
        }
    }
    if let Some((n, _)) = pending {
        return fail(n, "EXTINF without a URI after it");
    }
    let Some(target_duration) = target else {
        return fail(0, "no EXT-X-TARGETDURATION");
    };
    if let Some((i, s)) = segments
        .iter()
        .enumerate()
        .find(|(_, s)| rounded_secs(s.duration_us) > target_duration)
    {
        return fail(
            0,
            format!(
                "segment {i} lasts {} s, beyond the target duration {target_duration} s",
                micros_text(s.duration_us)
            ),
        );
    }
    Ok(MediaPlaylist {
        version: version.unwrap_or(1),
        target_duration,
        media_sequence: sequence.unwrap_or(0),
        playlist_type,
        independent_segments,
        ended,
        segments,
    })
}

fn set_once<T>(slot: &mut Option<T>, n: usize, name: &str, value: T) -> Result<(), ParseError> {
    if slot.is_some() {
        return fail(n, format!("{name} given twice"));
    }
    *slot = Some(value);
    Ok(())
}

/// A decimal-integer (RFC 8216 §4.2: at most 20 digits, and it must fit u64).
fn integer(n: usize, text: &str) -> Result<u64, ParseError> {
    if text.is_empty() || text.len() > 20 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return fail(n, format!("{text:?} is not a decimal integer"));
    }
    text.parse()
        .or_else(|_| fail(n, format!("{text} is too large")))
}

/// A decimal-floating-point, to a fixed point with `places` decimals.
fn fixed(n: usize, text: &str, places: u32) -> Result<u64, ParseError> {
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(frac) {
        return fail(n, format!("{text:?} is not a decimal number"));
    }
    let whole: u64 = match whole.parse() {
        Ok(w) if w <= MAX_SECONDS => w,
        _ => return fail(n, format!("{text} is too large")),
    };
    let scale = 10u64.pow(places);
    let mut fraction = 0;
    for (i, b) in frac.bytes().take(places as usize).enumerate() {
        fraction += u64::from(b - b'0') * 10u64.pow(places - 1 - i as u32);
    }
    Ok(whole * scale + fraction)
}

fn duration_us(n: usize, text: &str) -> Result<u64, ParseError> {
    fixed(n, text.trim(), 6)
}

/// An attribute list: `NAME=value,NAME="quoted, value"`.
fn attributes(n: usize, text: &str) -> Result<Vec<(&str, &str)>, ParseError> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let Some((name, after)) = rest.split_once('=') else {
            return fail(n, format!("attribute without a value in {text:?}"));
        };
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-')
        {
            return fail(n, format!("bad attribute name {name:?}"));
        }
        let (value, after) = if let Some(quoted) = after.strip_prefix('"') {
            let Some(end) = quoted.find('"') else {
                return fail(n, format!("unterminated quoted string in {name}"));
            };
            (&after[..end + 2], &quoted[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        if out.iter().any(|(seen, _)| *seen == name) {
            return fail(n, format!("attribute {name} given twice"));
        }
        out.push((name, value));
        rest = match after.strip_prefix(',') {
            Some(next) if !next.is_empty() => next,
            Some(_) => return fail(n, "a trailing comma"),
            None if after.is_empty() => "",
            None => return fail(n, format!("junk after {name}")),
        };
    }
    Ok(out)
}

fn variant(n: usize, text: &str) -> Result<Variant, ParseError> {
    let mut v = Variant {
        uri: String::new(),
        bandwidth: 0,
        average_bandwidth: None,
        resolution: None,
        frame_rate_milli: None,
        codecs: None,
    };
    let mut bandwidth = None;
    for (name, value) in attributes(n, text)? {
        match name {
            "BANDWIDTH" => bandwidth = Some(integer(n, value)?),
            "AVERAGE-BANDWIDTH" => v.average_bandwidth = Some(integer(n, value)?),
            "RESOLUTION" => {
                let parsed = value.split_once('x').and_then(|(w, h)| {
                    let w = integer(n, w).ok()?.try_into().ok()?;
                    let h = integer(n, h).ok()?.try_into().ok()?;
                    Some(Resolution {
                        width: w,
                        height: h,
                    })
                });
                match parsed {
                    Some(r) => v.resolution = Some(r),
                    None => return fail(n, format!("bad RESOLUTION {value:?}")),
                }
            }
            "FRAME-RATE" => v.frame_rate_milli = Some(fixed(n, value, 3)?),
            "CODECS" => match value.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
                Some(codecs) => v.codecs = Some(codecs.to_owned()),
                None => return fail(n, "CODECS must be a quoted string"),
            },
            _ => {}
        }
    }
    match bandwidth {
        Some(b) => v.bandwidth = b,
        None => return fail(n, "EXT-X-STREAM-INF without BANDWIDTH"),
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FFMPEG_MEDIA: &str = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:4\n\
        #EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-INDEPENDENT-SEGMENTS\n\
        #EXTINF:4.000000,\nindex0.ts\n#EXTINF:4.000000,\nindex1.ts\n#EXTINF:1.966667,\n\
        index2.ts\n#EXT-X-ENDLIST\n";

    #[test]
    fn reads_ffmpegs_media_playlist() {
        let p = parse_media(FFMPEG_MEDIA).unwrap();
        assert_eq!(p.target_duration, 4);
        assert!(p.ended);
        assert_eq!(p.playlist_type, Some(PlaylistType::Vod));
        assert_eq!(
            p.segments.iter().map(|s| s.duration_us).collect::<Vec<_>>(),
            [4_000_000, 4_000_000, 1_966_667]
        );
        assert_eq!(p.segments[2].uri, "index2.ts");
        assert_eq!(p.duration_us(), 9_966_667);
        assert_eq!(parse_media(&p.to_string()).unwrap(), p);
    }

    #[test]
    fn master_round_trips_with_quoted_commas() {
        let text = "#EXTM3U\r\n#EXT-X-VERSION:3\n#EXT-X-STREAM-INF:BANDWIDTH=5500000,\
            AVERAGE-BANDWIDTH=5128000,RESOLUTION=1920x1080,FRAME-RATE=29.970,\
            CODECS=\"avc1.640028,mp4a.40.2\"\n1080p/index.m3u8\n\
            #EXT-X-STREAM-INF:BANDWIDTH=700000\n# a comment\n360p/index.m3u8\n";
        let m = parse_master(text).unwrap();
        assert_eq!(m.variants.len(), 2);
        let top = &m.variants[0];
        assert_eq!(top.bandwidth, 5_500_000);
        assert_eq!(top.average_bandwidth, Some(5_128_000));
        assert_eq!(
            top.resolution,
            Some(Resolution {
                width: 1920,
                height: 1080
            })
        );
        assert_eq!(top.frame_rate_milli, Some(29_970));
        assert_eq!(top.codecs.as_deref(), Some("avc1.640028,mp4a.40.2"));
        assert_eq!(m.variants[1].uri, "360p/index.m3u8");
        assert_eq!(parse_master(&m.to_string()).unwrap(), m);
    }

    #[test]
    fn refusals_name_the_line() {
        let cases: &[(&str, usize, &str)] = &[
            ("", 1, "#EXTM3U"),
            ("\u{feff}#EXTM3U\n", 1, "#EXTM3U"),
            ("#EXTM3U\n#EXTINF:4,\nseg.ts\n", 0, "TARGETDURATION"),
            (
                "#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXTINF:4.6,\nseg.ts\n",
                0,
                "beyond the target",
            ),
            (
                "#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXTINF:4,\n",
                3,
                "without a URI",
            ),
            (
                "#EXTM3U\n#EXT-X-TARGETDURATION:4\nseg.ts\n",
                3,
                "without EXTINF",
            ),
            (
                "#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXT-X-TARGETDURATION:5\n",
                3,
                "twice",
            ),
            ("#EXTM3U\n#EXT-X-TARGETDURATION:x\n", 2, "decimal integer"),
            (
                "#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXTINF:-1,\na\n",
                3,
                "decimal",
            ),
            (
                "#EXTM3U\n#EXT-X-TARGETDURATION:99999999999999999999\n",
                2,
                "too large",
            ),
            ("#EXTM3U\n#EXT-X-TARGETDURATION:4\u{7}\n", 2, "control"),
        ];
        for (text, line, reason) in cases {
            let err = parse_media(text).unwrap_err();
            assert_eq!(err.line, *line, "{text:?}: {err}");
            assert!(err.reason.contains(reason), "{text:?}: {err}");
        }
        let masters: &[(&str, usize, &str)] = &[
            (
                "#EXTM3U\n#EXT-X-STREAM-INF:RESOLUTION=1x1\na\n",
                2,
                "BANDWIDTH",
            ),
            (
                "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\n",
                2,
                "without a URI",
            ),
            ("#EXTM3U\n", 0, "no variant"),
            (
                "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1,BANDWIDTH=2\na\n",
                2,
                "twice",
            ),
            (
                "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1,CODECS=\"x\na\n",
                2,
                "unterminated",
            ),
            (
                "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1,\na\n",
                2,
                "trailing comma",
            ),
            (
                "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1,CODECS=x\na\n",
                2,
                "quoted",
            ),
            (
                "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1,RESOLUTION=1x\na\n",
                2,
                "RESOLUTION",
            ),
            (FFMPEG_MEDIA, 3, "master playlist"),
        ];
        for (text, line, reason) in masters {
            let err = parse_master(text).unwrap_err();
            assert_eq!(err.line, *line, "{text:?}: {err}");
            assert!(err.reason.contains(reason), "{text:?}: {err}");
        }
    }

    #[test]
    fn bounds_hold() {
        let mut text = String::from("#EXTM3U\n#EXT-X-TARGETDURATION:1\n");
        for i in 0..=MAX_SEGMENTS {
            text.push_str(&format!("#EXTINF:1,\n{i}\n"));
        }
        assert!(parse_media(&text).unwrap_err().reason.contains("more than"));
        let long = format!("#EXTM3U\n#{}\n", "x".repeat(MAX_LINE_BYTES));
        assert!(parse_media(&long).unwrap_err().reason.contains("longer"));
    }

    #[test]
    fn vod_target_duration_rounds_like_rfc_8216() {
        let seg = |us| MediaSegment {
            duration_us: us,
            uri: "s.ts".into(),
        };
        assert_eq!(
            MediaPlaylist::vod(vec![seg(4_000_000)], 4).target_duration,
            4
        );
        assert_eq!(
            MediaPlaylist::vod(vec![seg(4_499_999)], 4).target_duration,
            4
        );
        assert_eq!(
            MediaPlaylist::vod(vec![seg(4_500_000)], 4).target_duration,
            5
        );
        assert_eq!(
            MediaPlaylist::vod(vec![seg(1_000_000)], 4).target_duration,
            4
        );
    }
}
