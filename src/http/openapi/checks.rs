//! What the server checks, written into the document: the ranges, lengths, patterns
//! and enumerations the handlers and the specs' validation enforce, so that a request
//! the document calls valid is one the server takes, and one it calls invalid is one
//! the server refuses.
//!
//! The derived schemas know a field's type; the rules live in the validation code
//! (`RunSpec::validate`, `SweepSpec::check`, the query readers). They are stated here
//! once, next to each other, as JSON merged into the derived document, and the API
//! tests hold the two together: schemathesis (`tests/api/schemathesis.rs`) sends
//! schema-valid requests that must be taken and schema-violating ones that must be
//! refused.
//!
//! What JSON Schema cannot say is in [`STATED_ELSEWHERE`]: rules between fields
//! (`lr_schedule.min_lr` at most `optimizer.lr`, a batch no larger than the data), and
//! facts only the server knows (a data file that does not exist, more slots than it
//! has, an executor it has not enabled, an opaque cursor it did not make). The
//! document lists them under `x-stated-elsewhere` (`field`, `rule`), and the
//! schemathesis check lets the server refuse a schema-valid request only with a
//! problem whose detail names a field on that list.

use serde_json::{json, Value};

use crate::domain::spec::{MAX_LABELS, MAX_LABEL_KEY_CHARS, MAX_LABEL_VALUE_CHARS};
use crate::domain::sweep::spec::MAX_TRIALS;

/// The fields whose rules a schema cannot state, as the paths a `422`/`400` detail
/// starts with: each a rule between fields or a fact of the server's.
pub const STATED_ELSEWHERE: &[(&str, &str)] = &[
    (
        "cursor",
        "an opaque cursor must be one the server made, for the same sort",
    ),
    (
        "data",
        "the data must exist and be readable, with examples left for training",
    ),
    (
        "validation",
        "validation data must be readable and of the training data's kind",
    ),
    (
        "model",
        "a model's files must exist; a CNN's pools must leave an input",
    ),
    ("batch_size", "a batch is at most the training examples"),
    ("task", "synthetic data is a classification problem"),
    ("lr_schedule.min_lr", "at most `optimizer.lr`"),
    ("optimizer.nesterov", "needs a momentum above 0"),
    ("slots", "at most the slots the server has"),
    ("executor", "the executor must be enabled on the server"),
    ("argv[0]", "the program must be named"),
    ("timeout", "at least 1s"),
    ("grace", "at most 1h"),
    (
        "space",
        "each path must be a field of the base, each point a valid run spec",
    ),
    ("searcher.min_epochs", "at most `max_epochs`"),
    (
        "searcher.metric",
        "a trained base reports only val_accuracy, val_loss, val_mae, train_loss",
    ),
];

/// Any text without control characters (Rust's `char::is_control`: C0, DEL and C1).
const NO_CONTROL: &str = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$";
/// Like [`NO_CONTROL`], with at least one character other than white space.
const NOT_BLANK: &str =
    "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$";
/// A Slurm field: a short printable word, as it becomes an `sbatch` argument.
const SLURM_WORD: &str = "^[A-Za-z0-9_.:,=+/-]{1,128}$";
/// Slurm's time limit: minutes, `MM:SS`, `HH:MM:SS`, `D-HH` or `D-HH:MM:SS`.
const SLURM_TIME: &str = "^(?!.*-.*-)(?!.*:.*:.*:)[0-9]+([-:][0-9]+)*$";
/// A spec duration: a number of seconds, or one with `ms`, `s`, `m` or `h`.
/// (Eight digits of whole units at most, as `SpecDuration` takes.)
const DURATION: &str = "^\\s*[0-9]{1,8}(\\.[0-9]+)?\\s*(ms|s|m|h)?\\s*$";

/// Writes the checks into the document (`doc` is the whole document as JSON).
pub fn state(doc: &mut Value) {
    // A sweep's base is a run spec, held to the same rules under `base.`.
    let of_bases = STATED_ELSEWHERE
        .iter()
        .filter(|(field, _)| !["cursor", "space"].contains(field))
        .filter(|(field, _)| !field.starts_with("searcher") && !field.starts_with("base"))
        .map(|(field, rule)| (format!("base.{field}"), *rule));
    doc["x-stated-elsewhere"] = STATED_ELSEWHERE
        .iter()
        .map(|(field, rule)| (field.to_string(), *rule))
        .chain(of_bases)
        .map(|(field, rule)| json!({"field": field, "rule": rule}))
        .collect();
    let schemas = &mut doc["components"]["schemas"];
    for (component, property, rule) in property_rules() {
        if let Some(field) = schemas
            .get_mut(component)
            .and_then(|s| s.get_mut("properties"))
            .and_then(|p| p.get_mut(property))
        {
            merge(field, rule);
        }
    }
    if let Some(run_spec) = schemas.get_mut("RunSpec") {
        merge(run_spec, kind_rules());
    }
    if let Some(Value::Array(searchers)) = schemas
        .get_mut("SearcherSpec")
        .and_then(|s| s.get_mut("oneOf"))
    {
        for searcher in searchers {
            searcher["additionalProperties"] = json!(false);
            let Some(properties) = searcher.get_mut("properties") else {
                continue;
            };
            for (field, rule) in searcher_rules() {
                if let Some(property) = properties.get_mut(field) {
                    merge(property, rule);
                }
            }
        }
    }
    if let Some(sweep) = schemas.get_mut("SweepSpec") {
        merge(
            sweep,
            json!({"properties": {"base": {"$ref": "#/components/schemas/RunSpec"}}}),
        );
    }
    link(doc);
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for (method, operation) in item.iter_mut() {
            let Some(parameters) = operation
                .get_mut("parameters")
                .and_then(Value::as_array_mut)
            else {
                continue;
            };
            for parameter in parameters {
                let name = parameter["name"].as_str().unwrap_or_default().to_string();
                if let Some(rule) = parameter_rule(method, path, &name) {
                    merge(&mut parameter["schema"], rule);
                }
                if method == "get" && path == "/api/v1/runs" {
                    // The list reads an empty parameter as an absent one.
                    let schema = parameter["schema"].take();
                    parameter["schema"] = or_empty(schema);
                }
            }
        }
    }
}

/// Links from what makes a run or a sweep to the operations on it (`id` from the
/// answer's body), so a client generator, and schemathesis's stateful phase, can
/// follow a run from its submission.
fn link(doc: &mut Value) {
    let runs = [
        "get_run",
        "list_run_events",
        "run_facts",
        "get_run_metrics",
        "run_logs",
        "cancel_run",
        "pause_run",
        "resume_run",
        "delete_artifacts",
    ];
    let sweeps = ["get_sweep", "cancel_sweep", "pause_sweep", "resume_sweep"];
    for (path, statuses, targets) in [
        ("/api/v1/runs", &["200", "201"][..], &runs[..]),
        ("/api/v1/sweeps", &["201"][..], &sweeps[..]),
    ] {
        for status in statuses {
            let Some(response) = doc.pointer_mut(&format!(
                "/paths/{}/post/responses/{status}",
                path.replace('/', "~1")
            )) else {
                continue;
            };
            let links: serde_json::Map<String, Value> = targets
                .iter()
                .map(|operation| {
                    (
                        (*operation).to_string(),
                        json!({
                            "operationId": operation,
                            "parameters": {"id": "$response.body#/id"},
                        }),
                    )
                })
                .collect();
            response["links"] = Value::Object(links);
        }
    }
}

/// `schema`, or an empty string (for an array, items that may be empty).
fn or_empty(schema: Value) -> Value {
    let empty = json!({"type": "string", "maxLength": 0});
    if schema["type"] == "array" {
        let mut schema = schema;
        let items = schema["items"].take();
        schema["items"] = json!({"anyOf": [items, empty]});
        return schema;
    }
    json!({"anyOf": [schema, empty]})
}

/// The rule of one parameter, by method, path and name.
fn parameter_rule(method: &str, path: &str, name: &str) -> Option<Value> {
    match (method, path, name) {
        (_, _, "Idempotency-Key") => Some(json!({
            "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"
        })),
        ("get", "/api/v1/runs/{id}/events", "type") => Some(json!({
            "items": {"enum": crate::domain::EventKind::ALL.map(crate::domain::EventKind::name).to_vec()}
        })),
        ("get", "/api/v1/runs", "sort") => Some(json!({
            "enum": [
                "created_at", "-created_at", "updated_at", "-updated_at", "name", "-name", "queue",
                "-queue"
            ]
        })),
        _ => None,
    }
}

/// `(component, property, rule)`: the rules of single fields.
fn property_rules() -> Vec<(&'static str, &'static str, Value)> {
    let labels = json!({
        "maxProperties": MAX_LABELS,
        "propertyNames": {
            "pattern": format!("^[A-Za-z0-9][A-Za-z0-9._/-]{{0,{}}}$", MAX_LABEL_KEY_CHARS - 1)
        },
        "additionalProperties": {"maxLength": MAX_LABEL_VALUE_CHARS, "pattern": NO_CONTROL},
    });
    let name = json!({"minLength": 1, "maxLength": 128, "pattern": NOT_BLANK});
    let rate = json!({"exclusiveMinimum": 0, "maximum": 10});
    let decay = json!({"minimum": 0, "maximum": 10});
    let unit = json!({"minimum": 0, "exclusiveMaximum": 1});
    let path = json!({"pattern": "\\S"});
    let mut rules = vec![
        ("RunSpec", "name", name.clone()),
        ("RunSpec", "labels", labels.clone()),
        ("RunSpec", "epochs", json!({"maximum": 100_000})),
        ("RunSpec", "batch_size", json!({"maximum": 1_000_000})),
        ("RunSpec", "max_retries", json!({"maximum": 100})),
        ("RunSpec", "slots", json!({"minimum": 1, "maximum": 64})),
        (
            "RunSpec",
            "priority",
            json!({"minimum": -1000, "maximum": 1000}),
        ),
        (
            "RunSpec",
            "stall_after_secs",
            json!({"minimum": 1, "maximum": 86_400}),
        ),
        (
            "RunSpec",
            "retry_backoff_secs",
            json!({"minimum": 0, "maximum": 3600}),
        ),
        ("RunSpec", "grad_clip", json!({"exclusiveMinimum": 0})),
        ("RunSpec", "nodes", json!({"minimum": 1, "maximum": 1024})),
        (
            "RunSpec",
            "ranks_per_node",
            json!({"minimum": 1, "maximum": 64}),
        ),
        (
            "RunSpec",
            "time_limit",
            json!({"pattern": SLURM_TIME, "maxLength": 128}),
        ),
        (
            "RunSpec",
            "argv",
            json!({"maxItems": 4096, "items": {"pattern": "^[^\\u0000]*$"}}),
        ),
        (
            "RunSpec",
            "cwd",
            json!({"pattern": "^[^\\u0000]*\\S[^\\u0000]*$"}),
        ),
        (
            "RunSpec",
            "env",
            json!({
                "maxProperties": 1024,
                "propertyNames": {"pattern": "^(?!RUNYARD_)[^=\\u0000]+$"},
                "additionalProperties": {"pattern": "^[^\\u0000]*$"},
            }),
        ),
        (
            "RunSpec",
            "timeout",
            json!({
                "type": ["string", "number", "null"],
                "pattern": DURATION,
                "minimum": 1,
                "maximum": 99_999_999,
            }),
        ),
        (
            "RunSpec",
            "grace",
            json!({"type": ["string", "number", "null"], "pattern": DURATION, "minimum": 0, "maximum": 3600}),
        ),
        ("CheckpointPolicy", "every_batches", json!({"minimum": 1})),
        ("CheckpointPolicy", "every_seconds", json!({"minimum": 1})),
        (
            "CheckpointPolicy",
            "keep",
            json!({"minimum": 1, "maximum": 1000}),
        ),
        (
            "SyntheticSpec",
            "samples",
            json!({"minimum": 1, "maximum": 10_000_000}),
        ),
        (
            "SyntheticSpec",
            "features",
            json!({"minimum": 1, "maximum": 65_536}),
        ),
        (
            "SyntheticSpec",
            "classes",
            json!({"minimum": 2, "maximum": 65_536}),
        ),
        ("CsvSpec", "path", path.clone()),
        (
            "CsvSpec",
            "delimiter",
            json!({"pattern": "^[\\u0000-\\u0009\\u000b-\\u0021\\u0023-\\u007f]$"}),
        ),
        ("NpySpec", "features", path.clone()),
        ("NpySpec", "targets", path.clone()),
        ("SafetensorsSpec", "path", path.clone()),
        ("SafetensorsSpec", "features", path.clone()),
        ("SafetensorsSpec", "targets", path.clone()),
        ("TorchscriptSpec", "path", path),
        (
            "MlpSpec",
            "hidden",
            json!({"maxItems": 16, "items": {"minimum": 1, "maximum": 65_536}}),
        ),
        ("MlpSpec", "dropout", json!({"minimum": 0, "maximum": 0.9})),
        (
            "CnnSpec",
            "input",
            json!({"items": {"minimum": 1, "maximum": 4096}}),
        ),
        (
            "CnnSpec",
            "channels",
            json!({"minItems": 1, "maxItems": 8, "items": {"minimum": 1, "maximum": 4096}}),
        ),
        (
            "CnnSpec",
            "kernel_sizes",
            json!({"minItems": 1, "maxItems": 8, "items": {"enum": [1, 3, 5, 7, 9, 11, 13, 15]}}),
        ),
        ("CnnSpec", "pool", json!({"minimum": 1, "maximum": 8})),
        ("CnnSpec", "dropout", json!({"minimum": 0, "maximum": 0.9})),
        (
            "CnnSpec",
            "hidden",
            json!({"items": {"minimum": 1, "maximum": 65_536}}),
        ),
        ("SgdSpec", "lr", rate.clone()),
        ("SgdSpec", "momentum", unit.clone()),
        ("SgdSpec", "weight_decay", decay.clone()),
        ("AdamSpec", "lr", rate),
        ("AdamSpec", "betas", json!({"items": unit})),
        (
            "AdamSpec",
            "eps",
            json!({"exclusiveMinimum": 0, "maximum": 1}),
        ),
        ("AdamSpec", "weight_decay", decay.clone()),
        (
            "StepSchedule",
            "step_epochs",
            json!({"minimum": 1, "maximum": 100_000}),
        ),
        (
            "StepSchedule",
            "gamma",
            json!({"exclusiveMinimum": 0, "maximum": 1}),
        ),
        ("CosineSchedule", "min_lr", decay),
        (
            "ValidationSpec",
            "fraction",
            json!({"exclusiveMinimum": 0, "maximum": 0.9}),
        ),
        ("SweepSpec", "name", name),
        ("SweepSpec", "labels", labels),
        (
            "SweepSpec",
            "priority",
            json!({"minimum": -1000, "maximum": 1000}),
        ),
    ];
    for field in ["partition", "gres", "account", "qos"] {
        rules.push(("RunSpec", field, json!({"pattern": SLURM_WORD})));
    }
    rules
}

/// The rules of the searchers' fields (each variant takes only its own fields).
fn searcher_rules() -> [(&'static str, Value); 6] {
    [
        ("max_trials", json!({"minimum": 1, "maximum": MAX_TRIALS})),
        ("max_concurrent", json!({"minimum": 1, "maximum": 1024})),
        ("metric", json!({"minLength": 1, "maxLength": 64})),
        ("min_epochs", json!({"minimum": 1, "maximum": 100_000})),
        ("max_epochs", json!({"minimum": 1, "maximum": 100_000})),
        ("reduction_factor", json!({"minimum": 2, "maximum": 100})),
    ]
}

/// The rules that hang on a run's `kind` and `executor`: which fields each may have.
/// A field a kind does not take may only be left out or empty (`null`, `[]`, `{}`).
fn kind_rules() -> Value {
    let none = json!({"type": "null"});
    let command = json!({"properties": {"kind": {"const": "command"}}, "required": ["kind"]});
    let slurm = json!({"properties": {"executor": {"const": "slurm"}}, "required": ["executor"]});
    let training = json!({
        "argv": {"maxItems": 0},
        "env": {"maxProperties": 0},
        "cwd": none.clone(),
        "timeout": none.clone(),
        "grace": none.clone(),
        "kill_on_stall": {"const": false},
        "model": {"type": "object"},
        "data": {"type": "object"},
        "epochs": {"minimum": 1},
        "batch_size": {"minimum": 1},
        "slots": {"const": 1},
        "nodes": {"const": 1},
        "ranks_per_node": {"const": 1},
    });
    let commands = json!({
        "model": none.clone(),
        "data": none.clone(),
        "validation": none.clone(),
        "grad_clip": none.clone(),
        "epochs": {"const": 0},
        "batch_size": {"const": 0},
        "argv": {"minItems": 1},
    });
    let local = json!({
        "partition": none.clone(),
        "gres": none.clone(),
        "time_limit": none.clone(),
        "account": none.clone(),
        "qos": none.clone(),
        "nodes": {"const": 1},
        "ranks_per_node": {"const": 1},
    });
    json!({
        "allOf": [
            {
                "if": command,
                "then": {"properties": commands, "required": ["argv"]},
                "else": {
                    "properties": training,
                    "required": ["model", "data", "epochs", "batch_size"],
                },
            },
            {
                "if": slurm,
                "then": {"properties": {"slots": {"const": 1}}},
                "else": {"properties": local},
            },
        ]
    })
}

/// Merges `rule` into `schema`: objects key by key, anything else replaced.
fn merge(schema: &mut Value, rule: Value) {
    match (schema, rule) {
        (Value::Object(schema), Value::Object(rule)) => {
            for (key, value) in rule {
                merge(schema.entry(key).or_insert(Value::Null), value);
            }
        }
        (schema, rule) => *schema = rule,
    }
}
