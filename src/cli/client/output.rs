//! Plain-text output: aligned tables, one-line summaries of events, numbers.

use serde_json::Value;

/// Columns separated by two spaces, each as wide as its widest cell; the last column
/// is not padded.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let columns = headers.len();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(columns) {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (i, cell) in cells.enumerate() {
            if i + 1 < columns {
                text.push_str(cell);
                let pad = widths[i].saturating_sub(cell.chars().count()) + 2;
                text.extend(std::iter::repeat_n(' ', pad));
            } else {
                text.push_str(cell);
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut headers.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

/// A number with four decimals, or `-` when absent.
pub fn num(value: &Value) -> String {
    value
        .as_f64()
        .map_or_else(|| "-".into(), |v| format!("{v:.4}"))
}

/// A string field, or `-`.
pub fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// A timestamp from the server, in local time (`YYYY-MM-DD HH:MM:SS`).
pub fn local_time(value: &Value) -> String {
    value
        .as_str()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|| text(value))
}

/// Only the time of day of a timestamp, in local time.
pub fn clock(value: &Value) -> String {
    let full = local_time(value);
    full.split_once(' ')
        .map_or(full.clone(), |(_, t)| t.to_string())
}

/// Seconds as `1h02m`, `3m04s` or `5.2s`.
pub fn duration(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "-".into();
    }
    let whole = secs.round() as u64;
    if whole >= 3600 {
        format!("{}h{:02}m", whole / 3600, whole % 3600 / 60)
    } else if whole >= 60 {
        format!("{}m{:02}s", whole / 60, whole % 60)
    } else {
        format!("{secs:.1}s")
    }
}

/// Bytes as `12.3 KiB`.
pub fn bytes(value: &Value) -> String {
    let Some(n) = value.as_u64() else {
        return "-".into();
    };
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut size = n as f64;
    let mut unit = 0;
    while size >= 1024.0 && unit + 1 < units.len() {
        size /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{size:.1} {}", units[unit])
    }
}

/// What a run's validation metric measures, from its `task`: events and epochs carry
/// it as `val_metric` whatever it is; lines name it for what it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ValMetric {
    /// A classification run's: validation accuracy.
    Accuracy,
    /// A regression run's: validation mean absolute error.
    Mae,
    /// Not known (no run at hand, or a server that does not say).
    #[default]
    Unnamed,
}

impl ValMetric {
    /// The metric of `run` (a run's JSON, or a spec), by its `task`.
    pub fn of(run: &Value) -> Self {
        match run["task"].as_str() {
            Some("classification") => Self::Accuracy,
            Some("regression") => Self::Mae,
            _ => Self::Unnamed,
        }
    }

    /// Its field name: `val_accuracy`, `val_mae`, or `val_metric` when not known.
    pub fn name(self) -> &'static str {
        match self {
            Self::Accuracy => "val_accuracy",
            Self::Mae => "val_mae",
            Self::Unnamed => "val_metric",
        }
    }

    /// Its name in words, e.g. `val accuracy`.
    pub fn words(self) -> &'static str {
        match self {
            Self::Accuracy => "val accuracy",
            Self::Mae => "val mae",
            Self::Unnamed => "val metric",
        }
    }

    /// A run's newest value of it from the run's `metrics` (`best`: its best value):
    /// the named field, or `val_metric` from a server that has none.
    pub fn value(self, metrics: &Value, best: bool) -> &Value {
        let named = match (self, best) {
            (Self::Accuracy, false) => "val_accuracy",
            (Self::Accuracy, true) => "best_val_accuracy",
            (Self::Mae, false) => "val_mae",
            (Self::Mae, true) => "best_val_mae",
            (Self::Unnamed, false) => "val_metric",
            (Self::Unnamed, true) => "best_val_metric",
        };
        match metrics.get(named) {
            Some(value) => value,
            None if best => &metrics["best_val_metric"],
            None => &metrics["val_metric"],
        }
    }
}

/// The details of one event's `data`, on one line, e.g. `epoch 2 loss 0.3100 acc
/// 0.9100 (1.2s)` for `EpochCompleted`; `val` names the validation metric of
/// `EpochEvaluated`.
pub fn describe(kind: &str, data: &Value, val: ValMetric) -> String {
    let d = |key: &str| &data[key];
    match kind {
        "RunSubmitted" => format!(
            "name {} digest {}",
            text(d("name")),
            text(d("digest")).chars().take(12).collect::<String>()
        ),
        "SlotClaimed" | "SlotReleased" => format!("slot {}", text(d("slot"))),
        "RunStarted" => format!(
            "attempt {} on {} (slot {})",
            text(d("attempt")),
            text(d("device")),
            text(d("slot"))
        ),
        "ResumedFromCheckpoint" => format!("step {} from {}", text(d("step")), text(d("path"))),
        "EpochCompleted" => format!(
            "epoch {} loss {} acc {} ({})",
            text(d("epoch")),
            num(d("train_loss")),
            num(d("train_accuracy")),
            d("duration_ms")
                .as_f64()
                .map_or_else(|| "-".into(), |ms| duration(ms / 1000.0))
        ),
        "EpochEvaluated" => format!(
            "epoch {} val_loss {} {} {}",
            text(d("epoch")),
            num(d("val_loss")),
            val.name(),
            num(d("val_metric"))
        ),
        "CheckpointSaved" => format!(
            "epoch {} batch {} step {} ({})",
            text(d("epoch")),
            text(d("batch")),
            text(d("step")),
            bytes(d("bytes"))
        ),
        "ArtifactSaved" => format!("{} ({})", text(d("name")), bytes(d("bytes"))),
        "RunCompleted" => format!(
            "loss {} acc {}",
            num(d("train_loss")),
            num(d("train_accuracy"))
        ),
        "RunFailed" | "RunCancelled" | "RunRequeued" | "RunPaused" => text(d("reason")),
        "RunRetryScheduled" => format!(
            "retry {} in {}: {}",
            text(d("retry")),
            d("delay_ms")
                .as_f64()
                .map_or_else(|| "-".into(), |ms| duration(ms / 1000.0)),
            text(d("reason"))
        ),
        "RunStalled" => format!(
            "idle {} (threshold {})",
            d("idle_secs").as_f64().map_or_else(|| "-".into(), duration),
            d("threshold_secs")
                .as_f64()
                .map_or_else(|| "-".into(), duration)
        ),
        "StallEnded" => format!(
            "after {}",
            d("idle_secs").as_f64().map_or_else(|| "-".into(), duration)
        ),
        "SweepSubmitted" => format!("name {}", text(d("name"))),
        "TrialCreated" => format!(
            "trial {} run {} at {}",
            text(d("trial")),
            text(d("run")),
            text(d("point"))
        ),
        "TrialReachedRung" => format!(
            "trial {} rung {} ({} epochs): {}",
            text(d("trial")),
            text(d("rung")),
            text(d("epochs")),
            num(d("metric"))
        ),
        "TrialPromoted" => format!("trial {} to rung {}", text(d("trial")), text(d("rung"))),
        "TrialStopped" => format!("trial {}: {}", text(d("trial")), text(d("reason"))),
        "SweepCompleted" => format!("best trial {}", text(d("best"))),
        "SweepCancelled" => text(d("reason")),
        _ => match data.as_object() {
            Some(fields) => fields
                .iter()
                .map(|(k, v)| format!("{k} {}", text(v)))
                .collect::<Vec<_>>()
                .join(" "),
            None => String::new(),
        },
    }
}

/// One line for a lifecycle event: `HH:MM:SS Type details` (`val`: as for
/// [`describe`]).
pub fn event_line(event: &Value, val: ValMetric) -> String {
    let kind = event["type"].as_str().unwrap_or("?");
    let details = describe(kind, &event["data"], val);
    let line = format!("{} {kind} {details}", clock(&event["at"]));
    line.trim_end().to_string()
}

/// A path segment for a run id typed by a user: anything that is not a plain id
/// character is escaped, so it cannot change the path.
pub(super) fn segment(id: &str) -> String {
    id.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A progress sample on one line.
pub(super) fn progress_line(p: &Value) -> String {
    format!(
        "epoch {}/{} batch {}/{} ({}%) loss {} {} samples/s ETA {}",
        text(&p["epoch"]),
        text(&p["epochs"]),
        text(&p["batch"]),
        text(&p["batches_per_epoch"]),
        p["percent"]
            .as_f64()
            .map_or_else(|| "-".into(), |v| format!("{v:.1}")),
        num(&p["loss"]),
        p["samples_per_sec"]
            .as_f64()
            .map_or_else(|| "-".into(), |v| format!("{v:.0}")),
        p["eta_secs"].as_f64().map_or_else(|| "-".into(), duration),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_table_aligns_its_columns() {
        let rows = vec![
            vec!["1".to_string(), "long name".into(), "x".into()],
            vec!["22".to_string(), "n".into(), "".into()],
        ];
        assert_eq!(
            table(&["ID", "NAME", "STATE"], &rows),
            "ID  NAME       STATE\n1   long name  x\n22  n\n"
        );
    }

    #[test]
    fn an_epoch_is_described_on_one_line() {
        let data =
            json!({"epoch": 2, "train_loss": 0.31, "train_accuracy": 0.91, "duration_ms": 1200});
        assert_eq!(
            describe("EpochCompleted", &data, ValMetric::Unnamed),
            "epoch 2 loss 0.3100 acc 0.9100 (1.2s)"
        );
        assert_eq!(describe("RunResumed", &json!({}), ValMetric::Unnamed), "");
        assert_eq!(
            describe("Unknown", &json!({"a": 1}), ValMetric::Unnamed),
            "a 1"
        );
    }

    #[test]
    fn the_validation_metric_is_named_for_the_runs_task() {
        let data = json!({"epoch": 3, "val_loss": 0.25, "val_metric": 0.875});
        let line = |run: Value| describe("EpochEvaluated", &data, ValMetric::of(&run));
        assert_eq!(
            line(json!({"task": "classification"})),
            "epoch 3 val_loss 0.2500 val_accuracy 0.8750"
        );
        assert_eq!(
            line(json!({"task": "regression"})),
            "epoch 3 val_loss 0.2500 val_mae 0.8750"
        );
        assert_eq!(line(json!({})), "epoch 3 val_loss 0.2500 val_metric 0.8750");

        // A run's metrics: the named field, else `val_metric` from an older server.
        let metrics = json!({"val_metric": 0.5, "best_val_metric": 0.25, "val_mae": 0.5, "best_val_mae": 0.25});
        assert_eq!(ValMetric::Mae.value(&metrics, true), &json!(0.25));
        let older = json!({"val_metric": 0.75, "best_val_metric": 0.8});
        assert_eq!(ValMetric::Accuracy.value(&older, false), &json!(0.75));
        assert_eq!(ValMetric::Accuracy.value(&older, true), &json!(0.8));
    }

    #[test]
    fn durations_and_sizes_read_well() {
        assert_eq!(duration(5.24), "5.2s");
        assert_eq!(duration(184.0), "3m04s");
        assert_eq!(duration(3720.0), "1h02m");
        assert_eq!(bytes(&json!(2048)), "2.0 KiB");
        assert_eq!(bytes(&json!(12)), "12 B");
    }
}
