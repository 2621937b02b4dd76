//! Reading a run spec from the bytes it was sent as (JSON, YAML or TOML): a body that
//! is not a document of its format is [`SpecParseError::Malformed`], naming the line
//! and column; a document that is not a valid spec is [`SpecParseError::Invalid`],
//! naming the field. The HTTP layer answers them as `400 malformed_body` and `422
//! invalid_spec`.

use super::RunSpec;

/// A format a run spec can be sent in, chosen by the request's `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecFormat {
    /// `application/json` (or any `+json` type); also what a body without a
    /// `Content-Type` is read as.
    Json,
    /// `application/yaml`, `application/x-yaml`, `text/yaml` (or any `+yaml` type).
    Yaml,
    /// `application/toml`.
    Toml,
}

/// The media types `POST /api/v1/runs` accepts, as its `415` names them.
pub const ACCEPTED_SPEC_TYPES: &str =
    "application/json, application/yaml (or application/x-yaml, text/yaml) or application/toml";

impl SpecFormat {
    /// The format a `Content-Type` value names (parameters such as `charset` are
    /// ignored), or `None` when it is not one runyard reads.
    pub fn from_content_type(value: &str) -> Option<Self> {
        let mime = value
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        match mime.as_str() {
            "application/json" => Some(SpecFormat::Json),
            "application/yaml" | "application/x-yaml" | "text/yaml" | "text/x-yaml" => {
                Some(SpecFormat::Yaml)
            }
            "application/toml" => Some(SpecFormat::Toml),
            m if m.ends_with("+json") => Some(SpecFormat::Json),
            m if m.ends_with("+yaml") => Some(SpecFormat::Yaml),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            SpecFormat::Json => "JSON",
            SpecFormat::Yaml => "YAML",
            SpecFormat::Toml => "TOML",
        }
    }
}

/// Why a body is not a run spec. The message is the whole of it: what the caller
/// is told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecParseError {
    /// The body is not a well-formed document of its format (names the line and
    /// column where the format allows).
    #[error("{0}")]
    Malformed(String),
    /// The document is not a valid spec: a rule broken, a field unknown or of the
    /// wrong type (names the field).
    #[error("{0}")]
    Invalid(String),
}

/// Parses and checks a run spec sent as `format`. A body that is not a document of
/// that format is [`SpecParseError::Malformed`] naming the line and column; a
/// document that is not a valid spec is [`SpecParseError::Invalid`] naming the field.
pub fn parse_spec_as(format: SpecFormat, body: &[u8]) -> Result<RunSpec, SpecParseError> {
    let spec: RunSpec = parse_as(format, body)?;
    spec.validate()
        .map_err(|e| SpecParseError::Invalid(e.to_string()))?;
    Ok(spec)
}

/// Reads a document sent as `format` into `T` (a run spec, a sweep spec), with the
/// same errors as [`parse_spec_as`], before any check of `T`'s own.
pub fn parse_as<T: serde::de::DeserializeOwned>(
    format: SpecFormat,
    body: &[u8],
) -> Result<T, SpecParseError> {
    let text = match format {
        SpecFormat::Json => return parse_json(body),
        SpecFormat::Yaml | SpecFormat::Toml => std::str::from_utf8(body).map_err(|e| {
            let (line, column) = line_column(body, e.valid_up_to());
            SpecParseError::Malformed(format!(
                "body is not valid {}: line {line} column {column}: not UTF-8 (byte {})",
                format.name(),
                e.valid_up_to()
            ))
        })?,
    };
    let malformed = |message: String| {
        SpecParseError::Malformed(format!("body is not valid {}: {message}", format.name()))
    };
    // Read into a JSON tree first: the document's own errors keep their position, and
    // the spec is then read exactly as a JSON body is (same rules, same field paths).
    let tree: serde_json::Value = match format {
        SpecFormat::Yaml => serde_saphyr::from_str(text).map_err(|e| {
            let message = e.without_snippet().to_string();
            let message = message.strip_prefix("error: ").unwrap_or(&message);
            malformed(one_line(message))
        })?,
        _ => toml::from_str(text).map_err(|e| {
            let at = e.span().map_or(0, |span| span.start.min(text.len()));
            let (line, column) = line_column(text.as_bytes(), at);
            malformed(format!(
                "line {line} column {column}: {}",
                one_line(e.message())
            ))
        })?,
    };
    serde_path_to_error::deserialize(whole_numbers(tree)).map_err(|e| {
        let path = e.path().to_string();
        SpecParseError::Invalid(join_path(&path, &e.into_inner().to_string()))
    })
}

/// `tree` with every number that has no fractional part written as an integer
/// (`190.0` as `190`): JSON Schema counts it an integer, and so does a spec, whose
/// integer fields would otherwise refuse what a client's float arithmetic wrote.
/// A float field takes an integer as it is.
pub fn whole_numbers(tree: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match tree {
        Value::Number(n) if n.is_f64() => {
            let x = n.as_f64().unwrap_or(f64::NAN);
            // Exactly representable as i64/u64: 2^63 and 2^64 are where those end.
            if x.fract() == 0.0
                && (-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&x)
            {
                Value::from(x as i64)
            } else if x.fract() == 0.0 && (0.0..1.844_674_407_370_955_2e19).contains(&x) {
                Value::from(x as u64)
            } else {
                Value::Number(n)
            }
        }
        Value::Array(items) => Value::Array(items.into_iter().map(whole_numbers).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(key, value)| (key, whole_numbers(value)))
                .collect(),
        ),
        other => other,
    }
}

/// 1-based line and column (in characters) of byte offset `at` of `text`.
fn line_column(text: &[u8], at: usize) -> (usize, usize) {
    let before = &text[..at.min(text.len())];
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let start = before
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i + 1);
    let column = String::from_utf8_lossy(&before[start..]).chars().count() + 1;
    (line, column)
}

/// A multi-line parser message on one line.
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Parses and checks a JSON run spec; the error names the field at fault.
pub fn parse_spec(body: &[u8]) -> Result<RunSpec, SpecParseError> {
    parse_spec_as(SpecFormat::Json, body)
}

/// Reads a JSON document into `T`; the error names the field at fault.
fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, SpecParseError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value: T = match serde_path_to_error::deserialize(&mut de) {
        Ok(value) => value,
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if inner.classify() != serde_json::error::Category::Data {
                return Err(SpecParseError::Malformed(format!(
                    "body is not valid JSON: {inner}"
                )));
            }
            // A well-formed document: read again with whole numbers as integers, and
            // if that fails too, name what is still wrong.
            let Ok(tree) = serde_json::from_slice::<serde_json::Value>(body) else {
                return Err(SpecParseError::Invalid(join_path(
                    &path,
                    &inner.to_string(),
                )));
            };
            return serde_path_to_error::deserialize(whole_numbers(tree)).map_err(|e| {
                let path = e.path().to_string();
                SpecParseError::Invalid(join_path(&path, &e.into_inner().to_string()))
            });
        }
    };
    de.end()
        .map_err(|e| SpecParseError::Malformed(format!("body is not valid JSON: {e}")))?;
    Ok(value)
}

/// Joins the path serde stopped at with a message that may start with a path inside a
/// tagged object (`model` + `hidden[0]: invalid type ...`).
fn join_path(path: &str, message: &str) -> String {
    // serde reports the position as "line L column C"; it means nothing to a caller who
    // sent a valid document, so only the path is kept.
    let message = message.split(" at line ").next().unwrap_or(message);
    if path == "." || path.is_empty() {
        return message.to_string();
    }
    match message.split_once(": ") {
        Some((inner, rest)) if !inner.contains(' ') && !inner.contains('`') => {
            let sep = if inner.starts_with('[') { "" } else { "." };
            format!("{path}{sep}{inner}: {rest}")
        }
        _ => format!("{path}: {message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = "name: demo\nmodel: {kind: mlp, hidden: [8]}\n\
        data: {kind: synthetic, samples: 100, features: 4, classes: 2, seed: 7}\n\
        optimizer: {kind: adam, lr: 0.01}\nepochs: 1\nbatch_size: 10\nseed: 1\n";

    fn malformed(result: Result<RunSpec, SpecParseError>) -> String {
        match result {
            Err(SpecParseError::Malformed(message)) => message,
            other => panic!("not malformed: {other:?}"),
        }
    }

    fn invalid(result: Result<RunSpec, SpecParseError>) -> String {
        match result {
            Err(SpecParseError::Invalid(message)) => message,
            other => panic!("not invalid: {other:?}"),
        }
    }

    #[test]
    fn content_types_name_formats_and_parameters_are_ignored() {
        for (value, format) in [
            ("application/json", Some(SpecFormat::Json)),
            ("application/vnd.runyard+json", Some(SpecFormat::Json)),
            ("Text/YAML; charset=utf-8", Some(SpecFormat::Yaml)),
            ("application/x-yaml", Some(SpecFormat::Yaml)),
            ("application/toml", Some(SpecFormat::Toml)),
            ("text/plain", None),
        ] {
            assert_eq!(SpecFormat::from_content_type(value), format, "{value}");
        }
    }

    #[test]
    fn a_broken_document_is_malformed_and_names_its_position() {
        let json = malformed(parse_spec_as(SpecFormat::Json, b"{\"name\": "));
        assert!(
            json.starts_with("body is not valid JSON: ") && json.contains("line 1"),
            "{json}"
        );
        let toml = malformed(parse_spec_as(SpecFormat::Toml, b"name = x\n"));
        assert!(
            toml.starts_with("body is not valid TOML: line 1 column 8: "),
            "{toml}"
        );
        let yaml = malformed(parse_spec_as(
            SpecFormat::Yaml,
            b"name: x\nepochs: [3\nmodel: 1\n",
        ));
        assert!(
            yaml.starts_with("body is not valid YAML: ") && yaml.contains("line 3"),
            "{yaml}"
        );
        assert!(!yaml.contains('\n'), "{yaml}");
        let bytes = malformed(parse_spec_as(SpecFormat::Yaml, b"name: x\nseed: \xff\n"));
        assert_eq!(
            bytes,
            "body is not valid YAML: line 2 column 7: not UTF-8 (byte 14)"
        );
    }

    #[test]
    fn a_document_that_is_not_a_spec_is_invalid_and_names_the_field() {
        parse_spec_as(SpecFormat::Yaml, YAML.as_bytes()).expect("the YAML spec is valid");
        let wide = invalid(parse_spec_as(
            SpecFormat::Yaml,
            YAML.replace("hidden: [8]", "hidden: [wide]").as_bytes(),
        ));
        assert!(wide.starts_with("model.hidden[0]: "), "{wide}");
        let zero = invalid(parse_spec_as(
            SpecFormat::Yaml,
            YAML.replace("epochs: 1", "epochs: 0").as_bytes(),
        ));
        assert!(zero.starts_with("epochs: "), "{zero}");
        let unknown = invalid(parse_spec(br#"{"name": "x", "depth": 3}"#));
        assert!(unknown.contains("depth"), "{unknown}");
        assert!(!unknown.contains(" at line "), "{unknown}");
    }

    #[test]
    fn whole_floats_are_read_as_integers_and_fractions_are_refused() {
        let spec = br#"{"name": "f", "model": {"kind": "mlp", "hidden": [8.0]},
            "data": {"kind": "synthetic", "samples": 64.0, "features": 4, "classes": 2},
            "epochs": 2.0, "batch_size": 16, "optimizer": {"kind": "sgd", "lr": 1}}"#;
        let parsed = parse_spec(spec).expect("whole floats are integers");
        assert_eq!((parsed.epochs, parsed.optimizer.lr()), (2, 1.0));
        let yaml = "name: f\nmodel: {kind: mlp, hidden: [8]}\ndata: {kind: synthetic, samples: 64, features: 4, classes: 2}\nepochs: 2.0\nbatch_size: 16\n";
        assert_eq!(
            parse_spec_as(SpecFormat::Yaml, yaml.as_bytes())
                .expect("yaml")
                .epochs,
            2
        );
        let half = spec.to_vec();
        let half = String::from_utf8(half)
            .expect("utf-8")
            .replace("2.0", "2.5");
        assert!(invalid(parse_spec(half.as_bytes())).starts_with("epochs: invalid type"));
    }

    #[test]
    fn paths_join_the_field_inside_a_tagged_object() {
        assert_eq!(
            join_path(".", "missing field `data`"),
            "missing field `data`"
        );
        assert_eq!(
            join_path("model", "hidden[0]: invalid type at line 1 column 9"),
            "model.hidden[0]: invalid type"
        );
        assert_eq!(join_path("model", "[0]: bad"), "model[0]: bad");
        assert_eq!(
            join_path("model", "unknown field `depth`, expected one of"),
            "model: unknown field `depth`, expected one of"
        );
        assert_eq!(line_column("ab\ncdé\nf".as_bytes(), 7), (2, 4));
    }
}
