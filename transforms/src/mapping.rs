//! Field mapping from channel configuration, applied to a rendered JSON payload after the
//! built-in rendering of a destination (see [`crate::dest`]).
//!
//! A [`FieldMapping`] is data, read from a destination's TOML table: renames, constants,
//! defaults, value maps (appointment status -> a destination's status names, PX360 visit type
//! -> journey stage, a Buktor client's own field names) and fields to drop. The logic lives
//! here so that the engine, `switchboard check` and the sandbox all apply it identically.
//!
//! Fields are addressed by dotted paths (`data.his_status`). When a path crosses a JSON array,
//! the rest of the path applies to every element, so one mapping serves a single upsert and a
//! bulk array alike. Steps run in a fixed order, documented on [`FieldMapping::apply`].
//!
//! This module is not the HL7 table mapping of v2 codes; that belongs to `from_v2`.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Configured changes to a rendered payload, applied by [`FieldMapping::apply`].
///
/// ```toml
/// [destination.mapping]
/// rename = { his_status = "buktor_status" }
/// constant = { source = "HIS" }
/// default = { notes = "" }
/// drop = ["data.his_created_at"]
/// [destination.mapping.values.status]
/// map = { booked = "Confirmed", cancelled = "Cancelled" }
/// fallback = "Pending"
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldMapping {
    /// Renames: dotted path of an existing field -> its new name in the same object.
    #[serde(default)]
    pub rename: BTreeMap<String, String>,
    /// Constants: dotted path -> value, always set (replacing what was rendered).
    #[serde(default)]
    pub constant: BTreeMap<String, Value>,
    /// Defaults: dotted path -> value, set only when the field is absent or `null`.
    #[serde(default)]
    pub default: BTreeMap<String, Value>,
    /// Value maps: dotted path -> table translating the field's current value.
    #[serde(default)]
    pub values: BTreeMap<String, ValueMap>,
    /// Dotted paths of fields removed from the payload.
    #[serde(default)]
    pub drop: Vec<String>,
}

/// A table translating one field's values, e.g. canonical appointment status -> destination status.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValueMap {
    /// Source value (compared as text; numbers and booleans by their JSON text) -> new value.
    #[serde(default)]
    pub map: BTreeMap<String, Value>,
    /// Value used when the current value is not in `map`; without it the value is kept.
    #[serde(default)]
    pub fallback: Option<Value>,
}

/// One problem found by [`FieldMapping::validate`], with the key path it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Key path inside the mapping table, e.g. `rename."data.his_status"`.
    pub key: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl std::fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

impl ValueMap {
    /// Builds a value map from `(from, to)` string pairs with no fallback.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self {
            map: pairs
                .into_iter()
                .map(|(k, v)| (k.to_owned(), Value::String(v.to_owned())))
                .collect(),
            fallback: None,
        }
    }

    /// Translates one value: the mapped value, else the fallback, else the value unchanged.
    pub fn translate(&self, value: &Value) -> Value {
        let key = match value {
            Value::String(s) => s.clone(),
            Value::Null => return self.fallback.clone().unwrap_or(Value::Null),
            other => other.to_string(),
        };
        match self.map.get(&key) {
            Some(v) => v.clone(),
            None => self.fallback.clone().unwrap_or_else(|| value.clone()),
        }
    }
}

/// Canonical appointment status names (the model's JSON form), for validating status tables.
pub const APPOINTMENT_STATUSES: [&str; 9] = [
    "pending",
    "waitlisted",
    "booked",
    "arrived",
    "completed",
    "cancelled",
    "no_show",
    "entered_in_error",
    "blocked",
];

/// Problems of a status table keyed by canonical appointment status, under `key`.
pub fn validate_status_table<'a>(
    key: &str,
    table: impl IntoIterator<Item = &'a String>,
) -> Vec<ConfigProblem> {
    table
        .into_iter()
        .filter(|k| !APPOINTMENT_STATUSES.contains(&k.as_str()))
        .map(|k| ConfigProblem {
            key: format!("{key}.{k}"),
            message: format!(
                "unknown appointment status; expected one of {}",
                APPOINTMENT_STATUSES.join(", ")
            ),
        })
        .collect()
}

impl FieldMapping {
    /// [`FieldMapping::validate`] with every key prefixed by `prefix` (e.g. `mapping.patient`).
    pub fn validate_at(&self, prefix: &str) -> Vec<ConfigProblem> {
        self.validate()
            .into_iter()
            .map(|p| ConfigProblem {
                key: format!("{prefix}.{}", p.key),
                message: p.message,
            })
            .collect()
    }

    /// True when the mapping changes nothing.
    pub fn is_empty(&self) -> bool {
        self.rename.is_empty()
            && self.constant.is_empty()
            && self.default.is_empty()
            && self.values.is_empty()
            && self.drop.is_empty()
    }

    /// Returns every problem in the mapping at once, each with its key path.
    ///
    /// An empty list means [`FieldMapping::apply`] will do what the configuration says.
    pub fn validate(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        let mut targets: BTreeMap<String, &str> = BTreeMap::new();
        for (from, to) in &self.rename {
            check_path("rename", from, &mut problems);
            let key = format!("rename.\"{from}\"");
            if to.is_empty() || to.contains('.') {
                problems.push(ConfigProblem {
                    key: key.clone(),
                    message: format!(
                        "new name {to:?} must be a plain field name (renames stay in the same object)"
                    ),
                });
            }
            let parent = parent_of(from);
            let target = if parent.is_empty() {
                to.clone()
            } else {
                format!("{parent}.{to}")
            };
            if let Some(other) = targets.insert(target.clone(), from) {
                problems.push(ConfigProblem {
                    key,
                    message: format!("renames {other:?} and {from:?} both produce {target:?}"),
                });
            }
        }
        for path in self.constant.keys() {
            check_path("constant", path, &mut problems);
            if self.default.contains_key(path) {
                problems.push(ConfigProblem {
                    key: format!("default.\"{path}\""),
                    message: "a constant is set for the same field, so this default never applies"
                        .into(),
                });
            }
        }
        for path in self.default.keys() {
            check_path("default", path, &mut problems);
        }
        for (path, table) in &self.values {
            check_path("values", path, &mut problems);
            if table.map.is_empty() && table.fallback.is_none() {
                problems.push(ConfigProblem {
                    key: format!("values.\"{path}\""),
                    message: "value map has neither `map` entries nor a `fallback`".into(),
                });
            }
        }
        let mut dropped = BTreeSet::new();
        for (i, path) in self.drop.iter().enumerate() {
            check_path(&format!("drop[{i}]"), path, &mut problems);
            if !dropped.insert(path) {
                problems.push(ConfigProblem {
                    key: format!("drop[{i}]"),
                    message: format!("{path:?} is listed twice"),
                });
            }
            if self.rename.contains_key(path) {
                problems.push(ConfigProblem {
                    key: format!("drop[{i}]"),
                    message: format!("{path:?} is both renamed and dropped"),
                });
            }
        }
        problems
    }

    /// Applies the mapping to `payload` in place.
    ///
    /// Order: value maps (on the rendered field names), then renames, then defaults, then
    /// constants, then drops. Paths that do not exist are skipped for value maps, renames and
    /// drops; defaults and constants create missing intermediate objects. A payload that is a
    /// JSON array (a bulk body) is mapped element by element.
    ///
    /// ```
    /// use transforms::mapping::{FieldMapping, ValueMap};
    /// let mut m = FieldMapping::default();
    /// m.values.insert("status".into(), ValueMap::from_pairs([("booked", "Confirmed")]));
    /// m.rename.insert("status".into(), "state".into());
    /// let mut body = serde_json::json!({"status": "booked"});
    /// m.apply(&mut body);
    /// assert_eq!(body, serde_json::json!({"state": "Confirmed"}));
    /// ```
    pub fn apply(&self, payload: &mut Value) {
        for (path, table) in &self.values {
            visit_parents(payload, path, &mut |obj, leaf| {
                if let Some(v) = obj.get_mut(leaf) {
                    *v = table.translate(v);
                }
            });
        }
        for (from, to) in &self.rename {
            visit_parents(payload, from, &mut |obj, leaf| {
                if let Some(v) = obj.remove(leaf) {
                    obj.insert(to.clone(), v);
                }
            });
        }
        for (path, value) in &self.default {
            set_path(payload, path, value, false);
        }
        for (path, value) in &self.constant {
            set_path(payload, path, value, true);
        }
        for path in &self.drop {
            visit_parents(payload, path, &mut |obj, leaf| {
                obj.remove(leaf);
            });
        }
    }
}

fn check_path(section: &str, path: &str, problems: &mut Vec<ConfigProblem>) {
    if path.is_empty() || path.split('.').any(str::is_empty) {
        problems.push(ConfigProblem {
            key: format!("{section}.\"{path}\""),
            message: "field path must be dot-separated non-empty names, e.g. \"data.his_status\""
                .into(),
        });
    }
}

fn parent_of(path: &str) -> &str {
    path.rsplit_once('.').map_or("", |(p, _)| p)
}

/// Calls `f(object, leaf_name)` for every object that is the parent of `path`'s last segment.
fn visit_parents(value: &mut Value, path: &str, f: &mut dyn FnMut(&mut Map<String, Value>, &str)) {
    let segments: Vec<&str> = path.split('.').collect();
    walk(value, &segments, f);
}

fn walk(value: &mut Value, segments: &[&str], f: &mut dyn FnMut(&mut Map<String, Value>, &str)) {
    match value {
        Value::Array(items) => {
            for item in items {
                walk(item, segments, f);
            }
        }
        Value::Object(obj) => match segments {
            [] => {}
            [leaf] => f(obj, leaf),
            [head, rest @ ..] => {
                if let Some(child) = obj.get_mut(*head) {
                    walk(child, rest, f);
                }
            }
        },
        _ => {}
    }
}

fn set_path(value: &mut Value, path: &str, new: &Value, overwrite: bool) {
    let segments: Vec<&str> = path.split('.').collect();
    set_segments(value, &segments, new, overwrite);
}

fn set_segments(value: &mut Value, segments: &[&str], new: &Value, overwrite: bool) {
    match value {
        Value::Array(items) => {
            for item in items {
                set_segments(item, segments, new, overwrite);
            }
        }
        Value::Object(obj) => match segments {
            [] => {}
            [leaf] => {
                let absent = obj.get(*leaf).is_none_or(Value::is_null);
                if overwrite || absent {
                    obj.insert((*leaf).to_owned(), new.clone());
                }
            }
            [head, rest @ ..] => {
                let child = obj
                    .entry((*head).to_owned())
                    .or_insert_with(|| Value::Object(Map::new()));
                if child.is_null() {
                    *child = Value::Object(Map::new());
                }
                set_segments(child, rest, new, overwrite);
            }
        },
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn from_toml(s: &str) -> FieldMapping {
        let v: Value = serde_json::from_str(s).expect("test mapping is valid JSON");
        serde_json::from_value(v).expect("test mapping matches FieldMapping")
    }

    #[test]
    fn applies_all_steps_in_order() {
        let m = from_toml(
            r#"{
              "rename": {"data.his_status": "buktor_status"},
              "constant": {"source": "HIS"},
              "default": {"data.notes": "none", "data.kept": "x"},
              "values": {"data.his_status": {"map": {"booked": "confirmed"}, "fallback": "other"}},
              "drop": ["data.secret"]
            }"#,
        );
        assert!(m.validate().is_empty());
        let mut body =
            json!({"source": "X", "data": {"his_status": "booked", "secret": 1, "kept": "y"}});
        m.apply(&mut body);
        assert_eq!(
            body,
            json!({"source": "HIS", "data": {"buktor_status": "confirmed", "notes": "none", "kept": "y"}})
        );
    }

    #[test]
    fn maps_each_element_of_a_bulk_array() {
        let mut m = FieldMapping::default();
        m.values.insert(
            "status".into(),
            ValueMap::from_pairs([("booked", "Confirmed"), ("cancelled", "Cancelled")]),
        );
        let mut body = json!([{"status": "booked"}, {"status": "cancelled"}, {"status": "odd"}]);
        m.apply(&mut body);
        assert_eq!(
            body,
            json!([{"status": "Confirmed"}, {"status": "Cancelled"}, {"status": "odd"}])
        );
    }

    #[test]
    fn value_map_compares_numbers_and_booleans_as_text() {
        let table = ValueMap::from_pairs([("true", "Yes"), ("200", "OK")]);
        assert_eq!(table.translate(&json!(true)), json!("Yes"));
        assert_eq!(table.translate(&json!(200)), json!("OK"));
        assert_eq!(table.translate(&json!(3)), json!(3));
    }

    #[test]
    fn validate_reports_every_problem_with_its_key() {
        let m = from_toml(
            r#"{
              "rename": {"a": "x", "b": "x", "c..d": "e.f"},
              "constant": {"k": 1},
              "default": {"k": 2},
              "values": {"v": {}},
              "drop": ["a", "z", "z"]
            }"#,
        );
        let keys: Vec<String> = m.validate().into_iter().map(|p| p.key).collect();
        assert_eq!(
            keys,
            vec![
                "rename.\"b\"",
                "rename.\"c..d\"",
                "rename.\"c..d\"",
                "default.\"k\"",
                "values.\"v\"",
                "drop[0]",
                "drop[2]",
            ]
        );
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let r: Result<FieldMapping, _> = serde_json::from_value(json!({"renames": {}}));
        assert!(r.is_err());
    }
}
