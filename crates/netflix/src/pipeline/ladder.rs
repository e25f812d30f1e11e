//! The bitrate ladder: which renditions a title is encoded into.
//!
//! Every rendition is H.264 High profile, level 4.0 (`avc1.640028`) with AAC-LC
//! stereo audio (`mp4a.40.2`), at the source's frame rate, in MPEG-TS segments.
//! A rendition taller than the source is skipped (no upscaling) unless fewer than
//! [`MIN_RENDITIONS`] would remain: then the smallest ones are kept.

use casebook_kit::config::ConfigError;
use serde::{Deserialize, Serialize};

/// The fewest renditions a title gets.
pub const MIN_RENDITIONS: usize = 3;
/// The RFC 6381 codecs of every rendition: H.264 High@4.0 + AAC-LC.
pub const CODECS: &str = "avc1.640028,mp4a.40.2";
/// The shape renditions have when the source's is unknown (the synthetic encoder).
pub const DEFAULT_ASPECT: (u32, u32) = (16, 9);

/// One rung of the ladder, as `[[netflix.ladder]]` configures it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenditionSpec {
    /// Its directory under the title (`[a-z0-9]{1,16}`), e.g. `720p`.
    pub name: String,
    /// Picture height in pixels (even); the width follows the source's shape.
    pub height: u32,
    /// Video bitrate, bits/s.
    pub video_bps: u64,
    /// Audio bitrate, bits/s.
    pub audio_bps: u64,
}

impl RenditionSpec {
    fn new(name: &str, height: u32, video_bps: u64, audio_bps: u64) -> Self {
        Self {
            name: name.to_owned(),
            height,
            video_bps,
            audio_bps,
        }
    }

    /// Video + audio, bits/s.
    pub fn total_bps(&self) -> u64 {
        self.video_bps + self.audio_bps
    }

    /// The even width that keeps a `source` width × height shape at this height.
    pub fn width_for(&self, source: (u32, u32)) -> u32 {
        let (w, h) = (u64::from(source.0.max(1)), u64::from(source.1.max(1)));
        let exact = u64::from(self.height) * w;
        // Rounded to the nearest even number, at least 2.
        let even = ((exact + h) / (2 * h)) * 2;
        u32::try_from(even.max(2)).unwrap_or(u32::MAX - 1)
    }
}

/// 1080p 5 Mbps, 720p 3 Mbps, 480p 1.2 Mbps, 360p 0.6 Mbps (video), AAC 128/128/96/64 kbps.
pub fn default_ladder() -> Vec<RenditionSpec> {
    vec![
        RenditionSpec::new("1080p", 1080, 5_000_000, 128_000),
        RenditionSpec::new("720p", 720, 3_000_000, 128_000),
        RenditionSpec::new("480p", 480, 1_200_000, 96_000),
        RenditionSpec::new("360p", 360, 600_000, 64_000),
    ]
}

/// Checks a ladder; `key` is its dotted config key.
pub fn validate(ladder: &[RenditionSpec], key: &str) -> Result<(), ConfigError> {
    if ladder.len() < MIN_RENDITIONS || ladder.len() > 16 {
        return Err(ConfigError::new(
            key,
            format!(
                "needs {MIN_RENDITIONS} to 16 renditions, got {}",
                ladder.len()
            ),
        ));
    }
    for (i, r) in ladder.iter().enumerate() {
        let at = |field: &str| format!("{key}[{i}].{field}");
        let name_ok = (1..=16).contains(&r.name.len())
            && r.name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if !name_ok {
            return Err(ConfigError::new(
                at("name"),
                "must be 1 to 16 of a-z and 0-9",
            ));
        }
        if ladder[..i].iter().any(|other| other.name == r.name) {
            return Err(ConfigError::new(
                at("name"),
                format!("`{}` is used twice", r.name),
            ));
        }
        if r.height < 64 || r.height > 4320 || !r.height.is_multiple_of(2) {
            return Err(ConfigError::new(at("height"), "must be even, 64 to 4320"));
        }
        if !(50_000..=100_000_000).contains(&r.video_bps) {
            return Err(ConfigError::new(
                at("video_bps"),
                "must be 50 kbps to 100 Mbps",
            ));
        }
        if !(16_000..=512_000).contains(&r.audio_bps) {
            return Err(ConfigError::new(at("audio_bps"), "must be 16 to 512 kbps"));
        }
        if i > 0 && ladder[i - 1].total_bps() <= r.total_bps() {
            return Err(ConfigError::new(
                at("video_bps"),
                "the ladder goes from the highest bitrate down",
            ));
        }
    }
    Ok(())
}

/// The renditions to encode for a source `source_height` pixels tall (`None`:
/// unknown, every rendition).
pub fn select(ladder: &[RenditionSpec], source_height: Option<u32>) -> Vec<RenditionSpec> {
    let Some(height) = source_height else {
        return ladder.to_vec();
    };
    let fitting = ladder.iter().filter(|r| r.height <= height).count();
    let keep = fitting.max(MIN_RENDITIONS).min(ladder.len());
    // The ladder goes from the top down: the smallest `keep` are at its end, and
    // those at most as tall as the source are exactly the last `fitting`.
    let mut chosen: Vec<RenditionSpec> = ladder.to_vec();
    chosen.sort_by(|a, b| {
        b.height
            .cmp(&a.height)
            .then(b.total_bps().cmp(&a.total_bps()))
    });
    chosen.split_off(chosen.len() - keep)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_ladder_is_valid() {
        validate(&default_ladder(), "netflix.ladder").unwrap();
    }

    #[test]
    fn no_upscaling_but_at_least_three() {
        let names = |h| {
            select(&default_ladder(), h)
                .into_iter()
                .map(|r| r.name)
                .collect::<Vec<_>>()
        };
        assert_eq!(names(None), ["1080p", "720p", "480p", "360p"]);
        assert_eq!(names(Some(2160)), ["1080p", "720p", "480p", "360p"]);
        assert_eq!(names(Some(720)), ["720p", "480p", "360p"]);
        assert_eq!(names(Some(240)), ["720p", "480p", "360p"]);
    }

    #[test]
    fn widths_keep_the_shape_and_are_even() {
        let r = &default_ladder()[1];
        assert_eq!(r.width_for((1920, 1080)), 1280);
        assert_eq!(r.width_for((1280, 720)), 1280);
        assert_eq!(r.width_for((640, 480)), 960);
        assert_eq!(default_ladder()[3].width_for((16, 9)), 640);
        // 360 * 1.85 = 666: even already; 480 * 2.39 = 1147.2 → 1148.
        assert_eq!(default_ladder()[3].width_for((1998, 1080)), 666);
        assert_eq!(default_ladder()[2].width_for((239, 100)), 1148);
    }

    #[test]
    fn bad_ladders_name_the_key() {
        let mut ladder = default_ladder();
        ladder[2].name = "720p".into();
        assert_eq!(validate(&ladder, "l").unwrap_err().key(), "l[2].name");
        let mut ladder = default_ladder();
        ladder[1].height = 721;
        assert_eq!(validate(&ladder, "l").unwrap_err().key(), "l[1].height");
        let mut ladder = default_ladder();
        ladder.swap(0, 1);
        assert_eq!(validate(&ladder, "l").unwrap_err().key(), "l[1].video_bps");
        assert_eq!(validate(&ladder[..2], "l").unwrap_err().key(), "l");
    }
}
