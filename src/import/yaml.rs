//! YAML (compose and process-compose files) read into plain JSON values.
//!
//! yaml-rust2 parses; this module turns its tree into `serde_json::Value` so that every
//! importer walks one kind of value. Anchors are resolved by the parser; merge keys
//! (`<<: *defaults`, which compose files use for shared settings) are applied here,
//! keys written in the mapping winning over merged ones.

use serde_json::{Map, Value};
use yaml_rust2::{Yaml, YamlLoader};

use super::ImportError;

/// The first document of `text`, or the parser's complaint with its line and column.
pub fn parse(text: &str) -> Result<Value, ImportError> {
    let documents = YamlLoader::load_from_str(text).map_err(|error| {
        let mark = error.marker();
        ImportError::Syntax {
            line: mark.line().max(1),
            column: mark.col() + 1,
            message: error.info().to_owned(),
        }
    })?;
    Ok(documents.into_iter().next().map_or(Value::Null, convert))
}

/// The keys of the mapping under `key` at the top of `text`, in the file's order
/// (the JSON values are ordered by name): empty when there is none.
pub fn keys_in_order(text: &str, key: &str) -> Vec<String> {
    let Ok(documents) = YamlLoader::load_from_str(text) else {
        return Vec::new();
    };
    let Some(Yaml::Hash(top)) = documents.into_iter().next() else {
        return Vec::new();
    };
    match top.get(&Yaml::String(key.to_owned())) {
        Some(Yaml::Hash(inner)) => inner.keys().cloned().map(key_text).collect(),
        _ => Vec::new(),
    }
}

/// Puts `services` in the order their names have in `order`; others after, as they are.
pub fn in_file_order<T>(services: &mut [T], order: &[String], name: impl Fn(&T) -> &str) {
    services.sort_by_key(|s| {
        order
            .iter()
            .position(|n| n == name(s))
            .unwrap_or(usize::MAX)
    });
}

fn convert(yaml: Yaml) -> Value {
    match yaml {
        Yaml::Real(text) => text
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map_or(Value::String(text), Value::Number),
        Yaml::Integer(i) => Value::from(i),
        Yaml::String(s) => Value::String(s),
        Yaml::Boolean(b) => Value::Bool(b),
        Yaml::Array(items) => Value::Array(items.into_iter().map(convert).collect()),
        Yaml::Hash(hash) => {
            let mut map = Map::new();
            let mut merged = Vec::new();
            for (key, value) in hash {
                match key {
                    Yaml::String(k) if k == "<<" => merged.push(value),
                    other => {
                        map.insert(key_text(other), convert(value));
                    }
                }
            }
            // Merged mappings fill only the keys the mapping does not write itself;
            // of several (`<<: [*a, *b]`), the first wins.
            for value in merged {
                let sources = match value {
                    Yaml::Array(items) => items,
                    single => vec![single],
                };
                for source in sources {
                    if let Value::Object(extra) = convert(source) {
                        for (k, v) in extra {
                            map.entry(k).or_insert(v);
                        }
                    }
                }
            }
            Value::Object(map)
        }
        Yaml::Alias(_) | Yaml::Null | Yaml::BadValue => Value::Null,
    }
}

fn key_text(key: Yaml) -> String {
    match key {
        Yaml::String(s) | Yaml::Real(s) => s,
        Yaml::Integer(i) => i.to_string(),
        Yaml::Boolean(b) => b.to_string(),
        Yaml::Null => "null".to_owned(),
        other => format!("{other:?}"),
    }
}

/// A scalar as text, the way YAML users think of it (`8000` and `"8000"` alike).
pub fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Compact JSON of a value, for comments.
pub fn shown(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => serde_json::to_string(other).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_keys_fill_what_the_mapping_does_not_say() {
        let text = "x-base: &base\n  restart: always\n  image: a\nservices:\n  web:\n    <<: *base\n    image: b\n";
        let value = parse(text).unwrap();
        assert_eq!(value["services"]["web"]["restart"], "always");
        assert_eq!(value["services"]["web"]["image"], "b");
    }

    #[test]
    fn syntax_errors_have_a_place() {
        let error = parse("services:\n  web:\n    image: [a\n").unwrap_err();
        let ImportError::Syntax { line, .. } = error else {
            panic!("{error:?}")
        };
        assert!(line >= 3, "{line}");
    }
}
