//! The schema of an artifact's `settings.json`, checked on both sides.
//!
//! The miner checks it before uploading (a typo costs an upload and an extrinsic otherwise) and
//! the validator checks it before a download enters the cache (the settings steer verification,
//! and they are not covered by the chain commitment unless they are the committed file). The
//! schema follows the settings file of ezkl-compiled circuits, reduced to what veribench reads;
//! it is written as checks in code rather than with a JSON-schema engine, to keep the dependency
//! tree small and the error messages precise:
//!
//! | key | type | required |
//! | --- | --- | --- |
//! | `run_args` | object | yes |
//! | `run_args.logrows` | integer, 1..=32 | yes |
//! | `run_args.input_scale` | integer, -64..=64 | yes |
//! | `run_args.param_scale` | integer, -64..=64 | yes |
//! | `run_args.input_visibility`, `output_visibility`, `param_visibility` | string or object | no |
//! | `num_rows` | integer ≥ 0 | yes |
//! | `model_input_scales` | array of integers | yes |
//! | `model_output_scales` | array of integers | yes |
//! | `version` | string | no |
//! | `total_assignments` | integer ≥ 0 | no |
//! | `required_lookups` | array | no |
//!
//! Other keys are allowed (ezkl writes many). The file must be a JSON object of at most
//! [`MAX_SETTINGS_BYTES`].

use serde_json::Value;

/// Largest accepted `settings.json`.
pub const MAX_SETTINGS_BYTES: u64 = 1024 * 1024;

/// Why a `settings.json` does not match the schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    /// Larger than [`MAX_SETTINGS_BYTES`].
    #[error("settings.json is {0} bytes, more than the {MAX_SETTINGS_BYTES} allowed")]
    TooLarge(u64),
    /// Not JSON.
    #[error("settings.json is not valid JSON: {0}")]
    Json(String),
    /// The top level is not an object.
    #[error("settings.json must be a JSON object")]
    NotObject,
    /// A required key is absent.
    #[error("settings.json: missing required key `{0}`")]
    Missing(&'static str),
    /// A key has the wrong type or is out of range.
    #[error("settings.json: `{key}` must be {expected}")]
    Invalid {
        /// The key (dotted path).
        key: &'static str,
        /// What it must be.
        expected: &'static str,
    },
}

/// The type one key must have.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Object,
    Int { min: i64, max: i64 },
    String,
    StringOrObject,
    Array,
    IntArray,
}

impl Kind {
    fn matches(self, v: &Value) -> bool {
        match self {
            Self::Object => v.is_object(),
            Self::Int { min, max } => v.as_i64().is_some_and(|i| (min..=max).contains(&i)),
            Self::String => v.is_string(),
            Self::StringOrObject => v.is_string() || v.is_object(),
            Self::Array => v.is_array(),
            Self::IntArray => v.as_array().is_some_and(|a| a.iter().all(|x| x.as_i64().is_some())),
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Self::Object => "an object",
            Self::Int { min: 1, max: 32 } => "an integer from 1 to 32",
            Self::Int { min: -64, max: 64 } => "an integer from -64 to 64",
            Self::Int { .. } => "a non-negative integer",
            Self::String => "a string",
            Self::StringOrObject => "a string or an object",
            Self::Array => "an array",
            Self::IntArray => "an array of integers",
        }
    }
}

const NON_NEGATIVE: Kind = Kind::Int { min: 0, max: i64::MAX };
const SCALE: Kind = Kind::Int { min: -64, max: 64 };

/// `(dotted path, kind, required)`, parents before children.
const SCHEMA: &[(&str, Kind, bool)] = &[
    ("run_args", Kind::Object, true),
    ("run_args.logrows", Kind::Int { min: 1, max: 32 }, true),
    ("run_args.input_scale", SCALE, true),
    ("run_args.param_scale", SCALE, true),
    ("run_args.input_visibility", Kind::StringOrObject, false),
    ("run_args.output_visibility", Kind::StringOrObject, false),
    ("run_args.param_visibility", Kind::StringOrObject, false),
    ("num_rows", NON_NEGATIVE, true),
    ("model_input_scales", Kind::IntArray, true),
    ("model_output_scales", Kind::IntArray, true),
    ("version", Kind::String, false),
    ("total_assignments", NON_NEGATIVE, false),
    ("required_lookups", Kind::Array, false),
];

/// Checks `bytes` (the content of `settings.json`) against the schema.
pub fn validate_settings(bytes: &[u8]) -> Result<(), SettingsError> {
    if bytes.len() as u64 > MAX_SETTINGS_BYTES {
        return Err(SettingsError::TooLarge(bytes.len() as u64));
    }
    let root: Value =
        serde_json::from_slice(bytes).map_err(|e| SettingsError::Json(e.to_string()))?;
    if !root.is_object() {
        return Err(SettingsError::NotObject);
    }
    for &(key, kind, required) in SCHEMA {
        let value = key.split('.').try_fold(&root, |v, part| v.get(part));
        match value {
            None if required => return Err(SettingsError::Missing(key)),
            None => {}
            Some(v) if !kind.matches(v) => {
                return Err(SettingsError::Invalid { key, expected: kind.describe() });
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Reads and checks a `settings.json` on disk, refusing to read more than the size limit.
pub fn validate_settings_file(path: &std::path::Path) -> Result<(), SettingsError> {
    use std::io::Read;
    let file = std::fs::File::open(path)
        .map_err(|e| SettingsError::Json(format!("cannot read {}: {e}", path.display())))?;
    let mut bytes = Vec::new();
    file.take(MAX_SETTINGS_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| SettingsError::Json(format!("cannot read {}: {e}", path.display())))?;
    validate_settings(&bytes)
}

/// A minimal valid `settings.json`, for tests and as an example in the docs.
pub const EXAMPLE_SETTINGS: &str = r#"{
  "run_args": {
    "logrows": 17,
    "input_scale": 7,
    "param_scale": 7,
    "input_visibility": "Private",
    "output_visibility": "Public",
    "param_visibility": "Fixed"
  },
  "num_rows": 91234,
  "total_assignments": 182468,
  "model_input_scales": [7],
  "model_output_scales": [14],
  "required_lookups": [],
  "version": "veribench-example"
}"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn with(edit: impl FnOnce(&mut Value)) -> Vec<u8> {
        let mut v: Value = serde_json::from_str(EXAMPLE_SETTINGS).expect("example");
        edit(&mut v);
        serde_json::to_vec(&v).expect("encode")
    }

    #[test]
    fn example_is_valid_and_extra_keys_pass() {
        validate_settings(EXAMPLE_SETTINGS.as_bytes()).expect("example valid");
        validate_settings(&with(|v| v["check_mode"] = "SAFE".into())).expect("extra key");
        validate_settings(&with(|v| {
            v["run_args"]["input_visibility"] = serde_json::json!({"Hashed": {}})
        }))
        .expect("object visibility");
    }

    #[test]
    fn each_violation_has_its_reason() {
        use SettingsError::*;
        let cases: Vec<(Vec<u8>, SettingsError)> = vec![
            (b"not json".to_vec(), Json(String::new())),
            (b"[1,2]".to_vec(), NotObject),
            (with(|v| drop(v.as_object_mut().map(|o| o.remove("run_args")))), Missing("run_args")),
            (
                with(|v| drop(v["run_args"].as_object_mut().map(|o| o.remove("logrows")))),
                Missing("run_args.logrows"),
            ),
            (
                with(|v| v["run_args"]["logrows"] = 40.into()),
                Invalid { key: "run_args.logrows", expected: "an integer from 1 to 32" },
            ),
            (
                with(|v| v["run_args"]["logrows"] = "17".into()),
                Invalid { key: "run_args.logrows", expected: "an integer from 1 to 32" },
            ),
            (
                with(|v| v["num_rows"] = (-1).into()),
                Invalid { key: "num_rows", expected: "a non-negative integer" },
            ),
            (
                with(|v| v["model_input_scales"] = serde_json::json!([1, "x"])),
                Invalid { key: "model_input_scales", expected: "an array of integers" },
            ),
            (with(|v| v["version"] = 3.into()), Invalid { key: "version", expected: "a string" }),
            (vec![b' '; 2 * 1024 * 1024], TooLarge(2 * 1024 * 1024)),
        ];
        for (bytes, want) in cases {
            let got = validate_settings(&bytes).expect_err("must be refused");
            match (&got, &want) {
                (Json(_), Json(_)) => {}
                _ => assert_eq!(got, want),
            }
            assert!(!got.to_string().is_empty());
        }
    }
}
