//! Encoders: a source → the renditions of a ladder, as segments with their
//! durations, ready to publish. ffmpeg when it is installed, the synthetic
//! encoder otherwise (`[netflix] encoder`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use casebook_kit::config::ConfigError;

use super::ffmpeg::Ffmpeg;
use super::ladder::{self, DEFAULT_ASPECT, RenditionSpec};
use super::progress::{Phase, Progress};
use super::synthetic::{SyntheticSegment, segment_durations};
use crate::config::{EncoderChoice, NetflixConfig};

/// What a title is made from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A media file; `label` names it in messages (a path, or "the upload of X").
    File { path: PathBuf, label: String },
    /// ffmpeg's test pattern (testsrc2, 1280×720 at 30 fps, a 440 Hz tone).
    TestPattern { duration: Duration },
}

impl Source {
    pub fn file(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        Self::File {
            label: path.display().to_string(),
            path,
        }
    }

    /// How messages name it.
    pub fn label(&self) -> String {
        match self {
            Self::File { label, .. } => label.clone(),
            Self::TestPattern { duration } => {
                format!("the {} s test pattern", duration.as_secs())
            }
        }
    }
}

/// Why a source could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// The source is the problem (unreadable, not media, no video): the caller's.
    #[error("{0}")]
    Source(String),
    /// The encoder failed on a source it could read, or could not run: ours.
    #[error("{0}")]
    Encoder(String),
}

/// Where a segment's bytes are.
#[derive(Debug, Clone)]
pub enum SegmentData {
    /// A file ffmpeg wrote.
    File(PathBuf),
    /// Made when published.
    Synthetic(SyntheticSegment),
}

impl SegmentData {
    pub async fn bytes(&self) -> anyhow::Result<Bytes> {
        use anyhow::Context as _;
        match self {
            Self::File(path) => Ok(tokio::fs::read(path)
                .await
                .with_context(|| format!("reading {}", path.display()))?
                .into()),
            Self::Synthetic(s) => Ok(s.bytes()),
        }
    }
}

/// One encoded segment.
#[derive(Debug, Clone)]
pub struct EncodedSegment {
    pub duration_us: u64,
    /// Its size in bytes.
    pub bytes: u64,
    pub data: SegmentData,
}

/// One encoded rendition.
#[derive(Debug, Clone)]
pub struct EncodedRendition {
    pub spec: RenditionSpec,
    pub width: u32,
    pub height: u32,
    pub segments: Vec<EncodedSegment>,
}

impl EncodedRendition {
    pub fn duration_us(&self) -> u64 {
        self.segments.iter().map(|s| s.duration_us).sum()
    }

    /// The highest segment bitrate (HLS's BANDWIDTH), bits/s.
    pub fn peak_bps(&self) -> u64 {
        self.segments
            .iter()
            .map(|s| bps(s.bytes, s.duration_us))
            .max()
            .unwrap_or(0)
    }

    /// The whole rendition's bitrate (HLS's AVERAGE-BANDWIDTH), bits/s.
    pub fn average_bps(&self) -> u64 {
        let bytes = self.segments.iter().map(|s| s.bytes).sum();
        bps(bytes, self.duration_us())
    }
}

fn bps(bytes: u64, duration_us: u64) -> u64 {
    if duration_us == 0 {
        return 0;
    }
    u64::try_from(u128::from(bytes) * 8_000_000 / u128::from(duration_us)).unwrap_or(u64::MAX)
}

/// A title's renditions, highest first.
#[derive(Debug, Clone)]
pub struct EncodedTitle {
    pub renditions: Vec<EncodedRendition>,
    /// `ffmpeg` or `synthetic`.
    pub encoder: &'static str,
    /// Frames per second × 1000, when known.
    pub frame_rate_milli: Option<u64>,
}

/// The encoder the pipeline runs.
#[derive(Debug, Clone)]
pub enum Encoder {
    Ffmpeg(Ffmpeg),
    Synthetic,
}

impl Encoder {
    /// The encoder `[netflix] encoder` asks for: `auto` is ffmpeg when found.
    pub fn from_config(config: &NetflixConfig) -> Result<Self, ConfigError> {
        match config.encoder {
            EncoderChoice::Synthetic => Ok(Self::Synthetic),
            EncoderChoice::Ffmpeg => Ffmpeg::find(config).map(Self::Ffmpeg),
            EncoderChoice::Auto => match Ffmpeg::find(config) {
                Ok(ffmpeg) => Ok(Self::Ffmpeg(ffmpeg)),
                // A binary the configuration names must be there; only the
                // PATH's absence means "use the synthetic encoder".
                Err(e) if config.ffmpeg.is_some() || config.ffprobe.is_some() => Err(e),
                Err(_) => Ok(Self::Synthetic),
            },
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Ffmpeg(_) => "ffmpeg",
            Self::Synthetic => "synthetic",
        }
    }

    /// Encodes `source` for `title` into `work_dir` (which the caller removes).
    pub async fn encode(
        &self,
        source: &Source,
        title: &str,
        config: &NetflixConfig,
        work_dir: &Path,
        progress: &Progress,
    ) -> Result<EncodedTitle, EncodeError> {
        let segment_us = u64::try_from(config.segment_duration.as_micros()).unwrap_or(u64::MAX);
        match self {
            Self::Ffmpeg(ffmpeg) => {
                ffmpeg
                    .encode(source, config, segment_us, work_dir, progress)
                    .await
            }
            Self::Synthetic => {
                progress.enter(Phase::Probing, 0);
                let duration_us = synthetic_duration(source, &config.ladder, segment_us).await?;
                progress.enter(Phase::Encoding, 1);
                let title = synthetic_title(title, &config.ladder, duration_us, segment_us);
                progress.step();
                Ok(title)
            }
        }
    }
}

/// How long a synthetic title lasts: a test pattern as asked; a file as long as
/// its bytes would play at the ladder's top bitrate (at least one segment, at most
/// a day), since nothing here can read its real duration.
async fn synthetic_duration(
    source: &Source,
    ladder: &[RenditionSpec],
    segment_us: u64,
) -> Result<u64, EncodeError> {
    match source {
        Source::TestPattern { duration } => {
            Ok(u64::try_from(duration.as_micros()).unwrap_or(u64::MAX))
        }
        Source::File { path, label } => {
            let meta = tokio::fs::metadata(path)
                .await
                .map_err(|e| EncodeError::Source(format!("cannot read {label}: {e}")))?;
            if !meta.is_file() {
                return Err(EncodeError::Source(format!("{label} is not a file")));
            }
            if meta.len() == 0 {
                return Err(EncodeError::Source(format!("{label} is empty")));
            }
            let top = ladder
                .iter()
                .map(RenditionSpec::total_bps)
                .max()
                .unwrap_or(1);
            let us = u128::from(meta.len()) * 8_000_000 / u128::from(top);
            let day = 86_400_000_000u128;
            Ok(u64::try_from(us.clamp(u128::from(segment_us), day)).unwrap_or(u64::MAX))
        }
    }
}

/// Every rendition of the ladder as synthetic segments.
pub fn synthetic_title(
    title: &str,
    ladder: &[RenditionSpec],
    duration_us: u64,
    segment_us: u64,
) -> EncodedTitle {
    let durations = segment_durations(duration_us, segment_us);
    let renditions = ladder::select(ladder, None)
        .into_iter()
        .map(|spec| {
            let segments = durations
                .iter()
                .enumerate()
                .map(|(index, &duration_us)| {
                    let segment = SyntheticSegment {
                        title: title.to_owned(),
                        rendition: spec.clone(),
                        index,
                        duration_us,
                    };
                    EncodedSegment {
                        duration_us,
                        bytes: segment.size(),
                        data: SegmentData::Synthetic(segment),
                    }
                })
                .collect();
            EncodedRendition {
                width: spec.width_for(DEFAULT_ASPECT),
                height: spec.height,
                spec,
                segments,
            }
        })
        .collect();
    EncodedTitle {
        renditions,
        encoder: "synthetic",
        frame_rate_milli: None,
    }
}
