//! Encoding with ffmpeg: one `ffmpeg` run makes every rendition (one decode,
//! split, scaled, x264 + AAC per rendition, the HLS muxer cutting 4-second
//! MPEG-TS segments at forced keyframes), its `-progress pipe:1` parsed into the
//! job's progress. `ffprobe` reads the source first, so a file ffmpeg cannot read
//! is refused with ffprobe's reason, naming the file, before anything is written.
//!
//! ffmpeg's own playlists are read back with [`super::hls`] and only their
//! segment durations kept: the pipeline writes the published playlists itself.
//!
//! Guaranteed: ffmpeg's stderr is kept to its last [`STDERR_TAIL`] bytes; the
//! child is killed if the job is dropped (an instance killed mid-encode).
//! Not guaranteed: that ffmpeg's build has libx264 (Debian's does).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use casebook_kit::config::ConfigError;
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader};

use super::encode::{
    EncodeError, EncodedRendition, EncodedSegment, EncodedTitle, SegmentData, Source,
};
use super::hls;
use super::ladder::{self, RenditionSpec};
use super::progress::{Phase, Progress};
use crate::config::NetflixConfig;

/// How much of ffmpeg's stderr is kept for an error message.
pub const STDERR_TAIL: usize = 8 * 1024;
/// Frames per second at most (H.264 level 4.0 holds 1080p at 30).
const MAX_FPS_MILLI: u64 = 30_000;
/// The test pattern's picture.
pub const TEST_PATTERN: (u32, u32) = (1280, 720);

/// Where ffmpeg and ffprobe are, and how to run them.
#[derive(Debug, Clone)]
pub struct Ffmpeg {
    pub ffmpeg: PathBuf,
    pub ffprobe: PathBuf,
    pub preset: String,
}

/// What ffprobe says about a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub width: u32,
    pub height: u32,
    /// Frames per second × 1000 (0 when unknown).
    pub frame_rate_milli: u64,
    /// 0 when unknown.
    pub duration_us: u64,
    pub has_audio: bool,
}

impl Ffmpeg {
    /// `[netflix] ffmpeg` / `ffprobe`, else the binaries on the PATH (ffprobe
    /// beside ffmpeg first).
    pub fn find(config: &NetflixConfig) -> Result<Self, ConfigError> {
        let ffmpeg = match &config.ffmpeg {
            Some(path) if is_executable(path) => path.clone(),
            Some(path) => {
                return Err(ConfigError::new(
                    "netflix.ffmpeg",
                    format!("{} is not an executable file", path.display()),
                ));
            }
            None => on_path("ffmpeg").ok_or_else(|| {
                ConfigError::new(
                    "netflix.encoder",
                    "ffmpeg is not on the PATH (Debian: apt-get install ffmpeg), and \
                     netflix.ffmpeg names none",
                )
            })?,
        };
        let ffprobe = match &config.ffprobe {
            Some(path) if is_executable(path) => path.clone(),
            Some(path) => {
                return Err(ConfigError::new(
                    "netflix.ffprobe",
                    format!("{} is not an executable file", path.display()),
                ));
            }
            None => ffmpeg
                .parent()
                .map(|dir| dir.join("ffprobe"))
                .filter(|p| is_executable(p))
                .or_else(|| on_path("ffprobe"))
                .ok_or_else(|| {
                    ConfigError::new(
                        "netflix.ffprobe",
                        "ffprobe is neither beside ffmpeg nor on the PATH",
                    )
                })?,
        };
        Ok(Self {
            ffmpeg,
            ffprobe,
            preset: config.x264_preset.clone(),
        })
    }

    /// Reads a source's streams; a file ffprobe cannot read is the caller's error.
    pub async fn probe(&self, path: &Path, label: &str) -> Result<Probe, EncodeError> {
        let output = tokio::process::Command::new(&self.ffprobe)
            .args(["-v", "error", "-print_format", "json", "-show_entries"])
            .arg("stream=codec_type,width,height,avg_frame_rate,r_frame_rate:format=duration")
            .arg(path)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| {
                EncodeError::Encoder(format!("cannot run {}: {e}", self.ffprobe.display()))
            })?;
        if !output.status.success() {
            let reason = last_lines(&output.stderr, path);
            return Err(EncodeError::Source(format!(
                "ffmpeg cannot read {label}: {reason}"
            )));
        }
        parse_probe(&output.stdout).map_err(|e| EncodeError::Source(format!("{label}: {e}")))
    }

    /// Encodes every rendition of the ladder that fits the source.
    pub async fn encode(
        &self,
        source: &Source,
        config: &NetflixConfig,
        segment_us: u64,
        work_dir: &Path,
        progress: &Progress,
    ) -> Result<EncodedTitle, EncodeError> {
        progress.enter(Phase::Probing, 0);
        let probe = match source {
            Source::File { path, label } => self.probe(path, label).await?,
            Source::TestPattern { duration } => Probe {
                width: TEST_PATTERN.0,
                height: TEST_PATTERN.1,
                frame_rate_milli: 30_000,
                duration_us: u64::try_from(duration.as_micros()).unwrap_or(u64::MAX),
                has_audio: true,
            },
        };
        let renditions: Vec<(RenditionSpec, u32)> =
            ladder::select(&config.ladder, Some(probe.height))
                .into_iter()
                .map(|spec| {
                    let width = spec.width_for((probe.width, probe.height));
                    (spec, width)
                })
                .collect();
        let args = encode_args(self, source, &probe, &renditions, segment_us, work_dir);
        progress.enter(Phase::Encoding, probe.duration_us);
        let label = source.label();
        self.run(&args, progress, &label).await?;
        let mut encoded = Vec::new();
        for (spec, width) in renditions {
            let dir = work_dir.join(&spec.name);
            let segments = read_rendition(&dir, &label).await?;
            encoded.push(EncodedRendition {
                height: spec.height,
                width,
                spec,
                segments,
            });
        }
        Ok(EncodedTitle {
            renditions: encoded,
            encoder: "ffmpeg",
            frame_rate_milli: Some(output_fps_milli(probe.frame_rate_milli)),
        })
    }

    async fn run(
        &self,
        args: &[OsString],
        progress: &Progress,
        label: &str,
    ) -> Result<(), EncodeError> {
        let mut child = tokio::process::Command::new(&self.ffmpeg)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                EncodeError::Encoder(format!("cannot run {}: {e}", self.ffmpeg.display()))
            })?;
        let stdout = child.stdout.take().expect("piped");
        let mut stderr = child.stderr.take().expect("piped");
        // stderr read beside stdout, keeping only its tail, so a chatty ffmpeg can
        // neither block on a full pipe nor fill memory.
        let tail = async move {
            let mut tail = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > STDERR_TAIL {
                    tail.drain(..tail.len() - STDERR_TAIL);
                }
            }
            tail
        };
        let lines = async {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                match parse_progress_line(&line) {
                    Some(ProgressLine::OutTimeUs(us)) => progress.set_done(us),
                    Some(ProgressLine::End) => progress.set_done(u64::MAX),
                    None => {}
                }
            }
        };
        let (tail, ()) = tokio::join!(tail, lines);
        let status = child
            .wait()
            .await
            .map_err(|e| EncodeError::Encoder(format!("waiting for ffmpeg: {e}")))?;
        if status.success() {
            Ok(())
        } else {
            Err(EncodeError::Encoder(format!(
                "ffmpeg failed encoding {label} ({status}): {}",
                last_lines(&tail, Path::new(""))
            )))
        }
    }
}

/// ffmpeg's arguments for one run making every rendition (public for tests).
pub fn encode_args(
    ffmpeg: &Ffmpeg,
    source: &Source,
    probe: &Probe,
    renditions: &[(RenditionSpec, u32)],
    segment_us: u64,
    work_dir: &Path,
) -> Vec<OsString> {
    let mut a: Vec<OsString> = Vec::new();
    let push = |a: &mut Vec<OsString>, items: &[&str]| a.extend(items.iter().map(OsString::from));
    push(
        &mut a,
        &[
            "-hide_banner",
            "-nostdin",
            "-y",
            "-loglevel",
            "error",
            "-nostats",
        ],
    );
    push(&mut a, &["-progress", "pipe:1"]);
    let audio_input = match source {
        Source::File { path, .. } => {
            push(&mut a, &["-i"]);
            a.push(path.as_os_str().to_owned());
            if probe.has_audio {
                "0:a:0"
            } else {
                // Every rendition carries AAC (CODECS says so): silence if the
                // source has none.
                push(
                    &mut a,
                    &[
                        "-f",
                        "lavfi",
                        "-i",
                        "anullsrc=channel_layout=stereo:sample_rate=48000",
                    ],
                );
                "1:a:0"
            }
        }
        Source::TestPattern { .. } => {
            let (w, h) = TEST_PATTERN;
            push(&mut a, &["-f", "lavfi", "-i"]);
            a.push(format!("testsrc2=size={w}x{h}:rate=30").into());
            push(
                &mut a,
                &["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"],
            );
            "1:a:0"
        }
    };
    let fps = output_fps_milli(probe.frame_rate_milli);
    let fps_filter = if probe.frame_rate_milli > MAX_FPS_MILLI + 500 {
        format!("fps={}.{:03},", fps / 1000, fps % 1000)
    } else {
        String::new()
    };
    let mut graph = format!("[0:v]{fps_filter}split={}", renditions.len());
    for i in 0..renditions.len() {
        graph.push_str(&format!("[s{i}]"));
    }
    for (i, (spec, width)) in renditions.iter().enumerate() {
        graph.push_str(&format!(
            ";[s{i}]scale={width}:{}:flags=bicubic,setsar=1[v{i}]",
            spec.height
        ));
    }
    let push = |a: &mut Vec<OsString>, items: &[String]| a.extend(items.iter().map(OsString::from));
    push(&mut a, &["-filter_complex".into(), graph]);
    for i in 0..renditions.len() {
        push(
            &mut a,
            &[
                "-map".into(),
                format!("[v{i}]"),
                "-map".into(),
                audio_input.into(),
            ],
        );
    }
    let seg_secs = format!("{}.{:06}", segment_us / 1_000_000, segment_us % 1_000_000);
    push(
        &mut a,
        &[
            "-c:v".into(),
            "libx264".into(),
            "-preset".into(),
            ffmpeg.preset.clone(),
            "-profile:v".into(),
            "high".into(),
            "-level:v".into(),
            "4.0".into(),
            "-pix_fmt".into(),
            "yuv420p".into(),
            "-sc_threshold".into(),
            "0".into(),
            "-force_key_frames".into(),
            format!("expr:gte(t,n_forced*{seg_secs})"),
            "-c:a".into(),
            "aac".into(),
            "-ac".into(),
            "2".into(),
            "-ar".into(),
            "48000".into(),
        ],
    );
    for (i, (spec, _)) in renditions.iter().enumerate() {
        let v = spec.video_bps;
        push(
            &mut a,
            &[
                format!("-b:v:{i}"),
                v.to_string(),
                format!("-maxrate:v:{i}"),
                (v / 10 * 11).to_string(),
                format!("-bufsize:v:{i}"),
                (v * 2).to_string(),
                format!("-b:a:{i}"),
                spec.audio_bps.to_string(),
            ],
        );
    }
    match source {
        Source::TestPattern { duration } => {
            push(
                &mut a,
                &[
                    "-t".into(),
                    format!("{}.{:03}", duration.as_secs(), duration.subsec_millis()),
                ],
            );
        }
        Source::File { .. } if !probe.has_audio => push(&mut a, &["-shortest".into()]),
        Source::File { .. } => {}
    }
    let var_stream_map = renditions
        .iter()
        .enumerate()
        .map(|(i, (spec, _))| format!("v:{i},a:{i},name:{}", spec.name))
        .collect::<Vec<_>>()
        .join(" ");
    push(
        &mut a,
        &[
            "-f".into(),
            "hls".into(),
            "-hls_time".into(),
            seg_secs,
            "-hls_playlist_type".into(),
            "vod".into(),
            "-hls_flags".into(),
            "independent_segments".into(),
            "-hls_segment_type".into(),
            "mpegts".into(),
            "-hls_segment_filename".into(),
        ],
    );
    a.push(work_dir.join("%v").join("seg%05d.ts").into_os_string());
    a.push("-var_stream_map".into());
    a.push(var_stream_map.into());
    a.push(work_dir.join("%v").join("index.m3u8").into_os_string());
    a
}

fn output_fps_milli(source: u64) -> u64 {
    match source {
        0 => MAX_FPS_MILLI,
        fps if fps > MAX_FPS_MILLI + 500 => MAX_FPS_MILLI,
        fps => fps,
    }
}

/// The segments ffmpeg wrote for one rendition, from its playlist.
async fn read_rendition(dir: &Path, label: &str) -> Result<Vec<EncodedSegment>, EncodeError> {
    let playlist_path = dir.join("index.m3u8");
    let text = tokio::fs::read_to_string(&playlist_path)
        .await
        .map_err(|e| {
            EncodeError::Encoder(format!("ffmpeg left no {}: {e}", playlist_path.display()))
        })?;
    let playlist = hls::parse_media(&text).map_err(|e| {
        EncodeError::Encoder(format!(
            "ffmpeg's {} does not parse: {e}",
            playlist_path.display()
        ))
    })?;
    if playlist.segments.is_empty() {
        return Err(EncodeError::Source(format!(
            "{label} has nothing to play (no segment came out)"
        )));
    }
    let mut segments = Vec::with_capacity(playlist.segments.len());
    for s in &playlist.segments {
        if s.uri.contains('/') || s.uri.contains("..") {
            return Err(EncodeError::Encoder(format!(
                "unexpected segment URI {:?}",
                s.uri
            )));
        }
        let path = dir.join(&s.uri);
        let bytes = tokio::fs::metadata(&path)
            .await
            .map_err(|e| EncodeError::Encoder(format!("{}: {e}", path.display())))?
            .len();
        segments.push(EncodedSegment {
            duration_us: s.duration_us,
            bytes,
            data: SegmentData::File(path),
        });
    }
    Ok(segments)
}

#[derive(Deserialize)]
struct ProbeJson {
    #[serde(default)]
    streams: Vec<ProbeStream>,
    #[serde(default)]
    format: Option<ProbeFormat>,
}

#[derive(Deserialize)]
struct ProbeStream {
    codec_type: Option<String>,
    width: Option<u32>,
    height: Option<u32>,
    avg_frame_rate: Option<String>,
    r_frame_rate: Option<String>,
}

#[derive(Deserialize)]
struct ProbeFormat {
    duration: Option<String>,
}

/// ffprobe's JSON → what the encoder needs.
pub fn parse_probe(json: &[u8]) -> Result<Probe, String> {
    let parsed: ProbeJson = serde_json::from_slice(json)
        .map_err(|e| format!("ffprobe's answer does not parse: {e}"))?;
    let video = parsed
        .streams
        .iter()
        .find(|s| {
            s.codec_type.as_deref() == Some("video") && s.width.is_some() && s.height.is_some()
        })
        .ok_or("no video stream")?;
    let (width, height) = (video.width.unwrap_or(0), video.height.unwrap_or(0));
    if width == 0 || height == 0 || width > 8192 || height > 8192 {
        return Err(format!("a {width}x{height} picture is not encodable here"));
    }
    let frame_rate_milli = [&video.avg_frame_rate, &video.r_frame_rate]
        .into_iter()
        .flatten()
        .find_map(|r| rational_milli(r))
        .unwrap_or(0);
    let duration_us = parsed
        .format
        .and_then(|f| f.duration)
        .and_then(|d| d.trim().parse::<f64>().ok())
        .filter(|d| d.is_finite() && *d > 0.0)
        .map_or(0, |d| (d * 1e6) as u64);
    Ok(Probe {
        width,
        height,
        frame_rate_milli,
        duration_us,
        has_audio: parsed
            .streams
            .iter()
            .any(|s| s.codec_type.as_deref() == Some("audio")),
    })
}

/// `30000/1001` → 29970.
fn rational_milli(text: &str) -> Option<u64> {
    let (n, d) = text.split_once('/')?;
    let (n, d): (u64, u64) = (n.trim().parse().ok()?, d.trim().parse().ok()?);
    (n > 0 && d > 0).then(|| n.saturating_mul(1000) / d)
}

/// One line of `-progress` output that moves the bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressLine {
    /// Microseconds of output written.
    OutTimeUs(u64),
    /// `progress=end`.
    End,
}

/// Reads one `key=value` line of ffmpeg's `-progress` output.
pub fn parse_progress_line(line: &str) -> Option<ProgressLine> {
    let (key, value) = line.trim().split_once('=')?;
    match key {
        // ffmpeg's out_time_ms is microseconds too (a long-standing misnomer).
        "out_time_us" | "out_time_ms" => value.parse().ok().map(ProgressLine::OutTimeUs),
        "progress" if value == "end" => Some(ProgressLine::End),
        _ => None,
    }
}

/// The last non-empty lines of a tool's stderr, the file's path dropped from
/// them (the caller names the file its own way).
fn last_lines(stderr: &[u8], path: &Path) -> String {
    let text = String::from_utf8_lossy(stderr);
    let path = path.display().to_string();
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let tail = lines[lines.len().saturating_sub(3)..]
        .iter()
        .map(|line| {
            let line = if path.is_empty() {
                line
            } else {
                line.strip_prefix(&path)
                    .map(|l| l.trim_start_matches(':').trim())
                    .unwrap_or(line)
            };
            // `[mov,mp4,m4a,3gp,3g2,mj2 @ 0x55d1…] moov atom not found`: the
            // demuxer's address says nothing to a reader.
            match line.strip_prefix('[').and_then(|l| l.split_once("] ")) {
                Some((context, rest)) if context.contains(" @ 0x") => rest.to_owned(),
                _ => line.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join("; ");
    if tail.is_empty() {
        "no reason given".to_owned()
    } else {
        tail
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| is_executable(p))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_json_from_ffprobe() {
        let json = br#"{"programs":[],"streams":[{"codec_type":"video","width":1920,"height":1080,
            "r_frame_rate":"30000/1001","avg_frame_rate":"30000/1001"},{"codec_type":"audio",
            "r_frame_rate":"0/0","avg_frame_rate":"0/0"}],"format":{"duration":"6.006000"}}"#;
        assert_eq!(
            parse_probe(json).unwrap(),
            Probe {
                width: 1920,
                height: 1080,
                frame_rate_milli: 29_970,
                duration_us: 6_006_000,
                has_audio: true
            }
        );
        let audio_only = br#"{"streams":[{"codec_type":"audio"}],"format":{"duration":"3"}}"#;
        assert_eq!(parse_probe(audio_only).unwrap_err(), "no video stream");
        assert!(parse_probe(b"{").is_err());
    }

    #[test]
    fn progress_lines() {
        assert_eq!(
            parse_progress_line("out_time_us=4000000"),
            Some(ProgressLine::OutTimeUs(4_000_000))
        );
        assert_eq!(
            parse_progress_line("out_time_ms=12"),
            Some(ProgressLine::OutTimeUs(12))
        );
        assert_eq!(parse_progress_line("progress=end"), Some(ProgressLine::End));
        assert_eq!(parse_progress_line("progress=continue"), None);
        assert_eq!(parse_progress_line("out_time_us=N/A"), None);
        assert_eq!(parse_progress_line("frame=12"), None);
    }

    #[test]
    fn one_run_makes_every_rendition() {
        let ffmpeg = Ffmpeg {
            ffmpeg: "ffmpeg".into(),
            ffprobe: "ffprobe".into(),
            preset: "veryfast".into(),
        };
        let probe = Probe {
            width: 1280,
            height: 720,
            frame_rate_milli: 60_000,
            duration_us: 6_000_000,
            has_audio: false,
        };
        let renditions: Vec<_> = ladder::select(&ladder::default_ladder(), Some(720))
            .into_iter()
            .map(|s| {
                let w = s.width_for((1280, 720));
                (s, w)
            })
            .collect();
        let args = encode_args(
            &ffmpeg,
            &Source::file("/in/clip.mov"),
            &probe,
            &renditions,
            4_000_000,
            Path::new("/work"),
        );
        let args: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let joined = args.join(" ");
        assert!(
            joined.contains("[0:v]fps=30.000,split=3[s0][s1][s2]"),
            "{joined}"
        );
        assert!(joined.contains("[s0]scale=1280:720"), "{joined}");
        assert!(joined.contains("[s2]scale=640:360"), "{joined}");
        assert!(joined.contains("anullsrc"), "{joined}");
        assert!(joined.contains("-shortest"), "{joined}");
        assert!(joined.contains("-b:v:1 1200000"), "{joined}");
        assert!(joined.contains("-hls_time 4.000000"), "{joined}");
        assert!(joined.contains("expr:gte(t,n_forced*4.000000)"), "{joined}");
        assert!(
            joined.contains("v:0,a:0,name:720p v:1,a:1,name:480p v:2,a:2,name:360p"),
            "{joined}"
        );
        assert_eq!(args.last().unwrap(), "/work/%v/index.m3u8");
        assert_eq!(args.iter().filter(|a| *a == "-map").count(), 6);
    }

    #[test]
    fn stderr_tails_drop_the_path() {
        let err = b"\n/tmp/x.bin: Invalid data found when processing input\n";
        assert_eq!(
            last_lines(err, Path::new("/tmp/x.bin")),
            "Invalid data found when processing input"
        );
        assert_eq!(last_lines(b"", Path::new("/x")), "no reason given");
        let demuxer = b"[mov,mp4,m4a,3gp,3g2,mj2 @ 0x559e83e5eb00] moov atom not found\n\
            /in.mp4: Invalid data found when processing input\n";
        assert_eq!(
            last_lines(demuxer, Path::new("/in.mp4")),
            "moov atom not found; Invalid data found when processing input"
        );
    }
}
