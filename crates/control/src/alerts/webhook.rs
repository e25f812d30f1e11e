//! The webhook payload: Alertmanager's (`version: "4"`), so any receiver written
//! for Alertmanager (a chat bridge, PagerDuty's or Opsgenie's Alertmanager
//! integration) takes casebook's alerts as they are.
//!
//! One payload per announced event (one alert firing or resolving): `status` is
//! the event, `alerts` holds that one alert with its labels (`alertname`, the
//! rule's labels, the group's tags), its annotations (the rule's, plus `value`
//! when the rule sets none), `startsAt` (when it fired), `endsAt` (when it
//! resolved; Alertmanager's zero time while firing), `generatorURL` (the rule on
//! the control plane's API) and `fingerprint` (FNV-1a of the sorted labels, hex,
//! stable across restarts). `groupLabels` is `{alertname}`, `receiver` is
//! `casebook`, `truncatedAlerts` 0.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde_json::{Value, json};

use super::eval::Event;
use super::source::Labels;

/// Alertmanager's "not ended" time.
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// What the payload of one alert event is made of.
#[derive(Debug, Clone)]
pub struct AlertEvent<'a> {
    pub rule: &'a str,
    /// Every label, `alertname` included.
    pub labels: &'a Labels,
    pub annotations: &'a BTreeMap<String, String>,
    pub event: Event,
    pub value: Option<f64>,
    pub starts_at: Option<SystemTime>,
    /// When it resolved; `None` while firing.
    pub ends_at: Option<SystemTime>,
    /// The control plane's base URL (`http://127.0.0.1:7700`).
    pub external_url: &'a str,
}

/// The Alertmanager webhook payload of one event.
pub fn payload(e: &AlertEvent<'_>) -> Value {
    let mut annotations = e.annotations.clone();
    if let Some(value) = e.value {
        annotations
            .entry("value".into())
            .or_insert_with(|| format!("{value}"));
    }
    let status = e.event.as_str();
    let alert = json!({
        "status": status,
        "labels": e.labels,
        "annotations": annotations,
        "startsAt": e.starts_at.map_or_else(|| ZERO_TIME.to_owned(), rfc3339),
        "endsAt": e.ends_at.map_or_else(|| ZERO_TIME.to_owned(), rfc3339),
        "generatorURL": format!("{}/api/alerts/rules/{}", e.external_url, e.rule),
        "fingerprint": fingerprint(e.labels),
    });
    json!({
        "version": "4",
        "groupKey": format!("{{}}:{{alertname={:?}}}", e.rule),
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "casebook",
        "groupLabels": { "alertname": e.rule },
        "commonLabels": e.labels,
        "commonAnnotations": annotations,
        "externalURL": e.external_url,
        "alerts": [alert],
    })
}

/// FNV-1a over `name 0xff value 0xff …` in label order, as 16 hex digits.
pub fn fingerprint(labels: &Labels) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for (name, value) in labels {
        for byte in name
            .bytes()
            .chain([0xff])
            .chain(value.bytes())
            .chain([0xff])
        {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{hash:016x}")
}

pub(crate) fn rfc3339(wall: SystemTime) -> String {
    humantime::format_rfc3339_millis(wall).to_string()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn the_payload_has_alertmanagers_shape() {
        let labels: Labels = [("alertname", "errors"), ("service", "amazon")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let annotations = BTreeMap::from([("summary".to_owned(), "too many".to_owned())]);
        let start = UNIX_EPOCH + Duration::from_secs(1_767_225_600);
        let body = payload(&AlertEvent {
            rule: "errors",
            labels: &labels,
            annotations: &annotations,
            event: Event::Resolved,
            value: Some(0.5),
            starts_at: Some(start),
            ends_at: Some(start + Duration::from_secs(90)),
            external_url: "http://127.0.0.1:7700",
        });
        assert_eq!(body["version"], "4");
        assert_eq!(body["status"], "resolved");
        assert_eq!(body["groupKey"], "{}:{alertname=\"errors\"}");
        assert_eq!(body["groupLabels"], json!({"alertname": "errors"}));
        let alert = &body["alerts"][0];
        assert_eq!(alert["labels"]["service"], "amazon");
        assert_eq!(
            alert["annotations"],
            json!({"summary": "too many", "value": "0.5"})
        );
        assert_eq!(alert["startsAt"], "2026-01-01T00:00:00.000Z");
        assert_eq!(alert["endsAt"], "2026-01-01T00:01:30.000Z");
        assert_eq!(
            alert["generatorURL"],
            "http://127.0.0.1:7700/api/alerts/rules/errors"
        );
        assert_eq!(alert["fingerprint"].as_str().unwrap().len(), 16);
        assert_eq!(alert["fingerprint"], fingerprint(&labels), "stable");
    }
}
