//! The `muster.toml` schema exactly as written: serde types, every key optional, unknown
//! keys rejected, each value wrapped in [`Spanned`] so that later checks can point at it.
//!
//! Nothing here interprets a value beyond its TOML type: durations, signals, addresses
//! and names stay strings until `validate` turns them into a [`super::Spec`]. Keeping
//! every key optional means one missing key never hides the other problems of a table.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use toml::Spanned;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawConfig {
    /// Files merged under this one (`sources` reads and removes it before this schema
    /// is deserialized; it is here so that the schema and its documentation list it).
    #[allow(dead_code)]
    pub include: Option<Spanned<Vec<Spanned<String>>>>,
    pub settings: Option<Spanned<RawSettings>>,
    pub services: Option<Spanned<BTreeMap<Spanned<String>, Spanned<RawService>>>>,
    pub hooks: Option<Vec<Spanned<RawHook>>>,
    pub router: Option<Spanned<RawRouter>>,
    pub pools: Option<Spanned<BTreeMap<Spanned<String>, Spanned<RawPool>>>>,
    pub cluster: Option<Spanned<RawCluster>>,
}

/// `[cluster]`: the etcd this host shares singletons and its services' state through.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawCluster {
    pub name: Option<Spanned<String>>,
    pub etcd: Option<Spanned<Vec<Spanned<String>>>>,
    pub host: Option<Spanned<String>>,
    pub advertise: Option<Spanned<String>>,
    pub lease_ttl: Option<Spanned<RawDuration>>,
}

/// `[router]`: the one front door that routes OpenAI-style requests by model.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawRouter {
    pub listen: Option<Spanned<String>>,
    pub max_body: Option<Spanned<String>>,
    pub request_timeout: Option<Spanned<RawDuration>>,
}

/// One `[pools.NAME]` table: services that share a budget (a GPU's memory).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawPool {
    pub capacity: Option<Spanned<String>>,
    pub exclusive: Option<Spanned<bool>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawSettings {
    pub state_dir: Option<Spanned<String>>,
    pub shutdown_timeout: Option<Spanned<RawDuration>>,
    pub logs: Option<Spanned<RawLogSettings>>,
    pub api: Option<Spanned<RawApiSettings>>,
    pub history: Option<Spanned<RawHistorySettings>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawLogSettings {
    pub max_size: Option<Spanned<String>>,
    pub keep: Option<Spanned<i64>>,
    pub tail_lines: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawApiSettings {
    pub listen: Option<Spanned<String>>,
    pub token_file: Option<Spanned<String>>,
    pub read_token_file: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawHistorySettings {
    pub max_events: Option<Spanned<i64>>,
    pub max_age: Option<Spanned<RawDuration>>,
}

/// One `[services.NAME]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawService {
    pub description: Option<Spanned<String>>,
    pub command: Option<Spanned<StringOrList>>,
    pub shell: Option<Spanned<String>>,
    pub cwd: Option<Spanned<String>>,
    pub env: Option<BTreeMap<Spanned<String>, Spanned<EnvValue>>>,
    pub env_file: Option<Spanned<StringOrList>>,
    pub ports: Option<Vec<Spanned<RawPort>>>,
    pub ready: Option<Spanned<RawProbe>>,
    pub alive: Option<Spanned<RawProbe>>,
    pub on_unhealthy: Option<Spanned<String>>,
    pub watchdog: Option<Spanned<RawDuration>>,
    pub wait_for_ports: Option<Spanned<bool>>,
    pub restart: Option<Spanned<String>>,
    pub backoff: Option<Spanned<RawBackoff>>,
    pub restart_limit: Option<Spanned<RawRestartLimit>>,
    pub stop_signal: Option<Spanned<String>>,
    pub stop_timeout: Option<Spanned<RawDuration>>,
    pub depends_on: Option<Spanned<RawDependsOn>>,
    pub autostart: Option<Spanned<bool>>,
    pub proxy: Option<Spanned<RawProxy>>,
    pub idle_stop: Option<Spanned<RawDuration>>,
    pub pidfile: Option<Spanned<String>>,
    pub port: Option<Spanned<RawPort>>,
    pub models: Option<Spanned<Vec<Spanned<String>>>>,
    pub upstream: Option<Spanned<String>>,
    pub max_concurrent: Option<Spanned<i64>>,
    pub max_queued: Option<Spanned<i64>>,
    pub pool: Option<Spanned<String>>,
    pub memory: Option<Spanned<String>>,
    pub user: Option<Spanned<RawScalar>>,
    pub group: Option<Spanned<RawScalar>>,
    pub umask: Option<Spanned<RawScalar>>,
    pub nice: Option<Spanned<i64>>,
    pub oom_score_adj: Option<Spanned<i64>>,
    pub limits: Option<Spanned<RawLimits>>,
    pub memory_max: Option<Spanned<RawScalar>>,
    pub cpu_max: Option<Spanned<RawScalar>>,
    pub reload_signal: Option<Spanned<String>>,
    #[allow(dead_code)]
    /// Never set once read: `replicas` is expanded (see `config::replicas`) before the
    /// tree is deserialized. Here so that the schema lists it.
    pub replicas: Option<Spanned<i64>>,
    pub singleton: Option<Spanned<bool>>,
    pub hosts: Option<Spanned<Vec<Spanned<String>>>>,
}

/// `limits = { nofile = 65536, core = 0 }`: resource limits set in the child with
/// `setrlimit`, named as `ulimit` and systemd's `Limit*=` name them.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawLimits {
    #[serde(rename = "as")]
    pub address_space: Option<Spanned<RawScalar>>,
    pub core: Option<Spanned<RawScalar>>,
    pub cpu: Option<Spanned<RawScalar>>,
    pub data: Option<Spanned<RawScalar>>,
    pub fsize: Option<Spanned<RawScalar>>,
    pub memlock: Option<Spanned<RawScalar>>,
    pub msgqueue: Option<Spanned<RawScalar>>,
    pub nice: Option<Spanned<RawScalar>>,
    pub nofile: Option<Spanned<RawScalar>>,
    pub nproc: Option<Spanned<RawScalar>>,
    pub rss: Option<Spanned<RawScalar>>,
    pub rtprio: Option<Spanned<RawScalar>>,
    pub sigpending: Option<Spanned<RawScalar>>,
    pub stack: Option<Spanned<RawScalar>>,
}

/// A readiness (`ready`) or liveness (`alive`) check. Exactly one of the kind keys
/// (`tcp`, `http`, `exec`, `log`, `notify`) must be set; `validate` enforces that and
/// which of the tuning keys apply to which use.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawProbe {
    pub tcp: Option<Spanned<String>>,
    pub http: Option<Spanned<String>>,
    pub exec: Option<Spanned<StringOrList>>,
    pub log: Option<Spanned<String>>,
    pub notify: Option<Spanned<bool>>,
    pub status: Option<Spanned<i64>>,
    pub body: Option<Spanned<String>>,
    pub interval: Option<Spanned<RawDuration>>,
    pub timeout: Option<Spanned<RawDuration>>,
    pub failures: Option<Spanned<i64>>,
    pub successes: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawBackoff {
    pub initial: Option<Spanned<RawDuration>>,
    pub max: Option<Spanned<RawDuration>>,
    pub reset_after: Option<Spanned<RawDuration>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawRestartLimit {
    pub count: Option<Spanned<i64>>,
    pub within: Option<Spanned<RawDuration>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawProxy {
    pub listen: Option<Spanned<String>>,
    pub upstream: Option<Spanned<String>>,
    pub http: Option<Spanned<bool>>,
    pub request_timeout: Option<Spanned<RawDuration>>,
    pub max_pending: Option<Spanned<i64>>,
}

/// One `[[hooks]]` entry.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawHook {
    pub on: Option<Spanned<Vec<Spanned<String>>>>,
    pub services: Option<Spanned<Vec<Spanned<String>>>>,
    pub run: Option<Spanned<StringOrList>>,
    pub timeout: Option<Spanned<RawDuration>>,
}

/// A duration as written (`"30s"`). A bare number is refused here with a hint, because
/// "is `30` seconds or milliseconds?" is exactly the ambiguity units remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawDuration(pub String);

impl<'de> Deserialize<'de> for RawDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;
        impl Visitor<'_> for DurationVisitor {
            type Value = RawDuration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration with a unit, such as \"500ms\", \"30s\" or \"5m\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawDuration, E> {
                Ok(RawDuration(v.to_owned()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawDuration, E> {
                Err(E::custom(format!(
                    "a duration needs a unit: write \"{v}s\" or \"{v}ms\", not {v}"
                )))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawDuration, E> {
                self.visit_i64(v.min(i64::MAX as u64) as i64)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<RawDuration, E> {
                Err(E::custom(format!(
                    "a duration needs a unit: write \"{v}s\", not {v}"
                )))
            }
        }
        deserializer.deserialize_any(DurationVisitor)
    }
}

/// A command line: either one string (split like a shell would, never run by one) or an
/// array of arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StringOrList {
    One(String),
    List(Vec<Spanned<String>>),
}

impl<'de> Deserialize<'de> for StringOrList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ListVisitor;
        impl<'de> Visitor<'de> for ListVisitor {
            type Value = StringOrList;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or an array of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<StringOrList, E> {
                Ok(StringOrList::One(v.to_owned()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<StringOrList, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(StringOrList::List(items))
            }
        }
        deserializer.deserialize_any(ListVisitor)
    }
}

/// An environment value. Numbers and booleans are accepted and written out as TOML
/// prints them, because `PORT = 5432` is what people type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvValue(pub String);

impl<'de> Deserialize<'de> for EnvValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EnvVisitor;
        impl Visitor<'_> for EnvVisitor {
            type Value = EnvValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<EnvValue, E> {
                Ok(EnvValue(v.to_owned()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<EnvValue, E> {
                Ok(EnvValue(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<EnvValue, E> {
                Ok(EnvValue(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<EnvValue, E> {
                Ok(EnvValue(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<EnvValue, E> {
                Ok(EnvValue(v.to_string()))
            }
        }
        deserializer.deserialize_any(EnvVisitor)
    }
}

/// A value that may be written as a number or as text: `user = "www-data"` or `user =
/// 33`, `nofile = 65536` or `nofile = "unlimited"`, `cpu-max = 1.5` or `"150%"`. Which
/// forms mean what is for `validate` to say.
#[derive(Debug, Clone, PartialEq)]
pub enum RawScalar {
    Int(i64),
    Float(f64),
    Text(String),
}

impl fmt::Display for RawScalar {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            RawScalar::Int(n) => write!(f, "{n}"),
            RawScalar::Float(x) => write!(f, "{x}"),
            RawScalar::Text(text) => write!(f, "\"{text}\""),
        }
    }
}

impl<'de> Deserialize<'de> for RawScalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ScalarVisitor;
        impl Visitor<'_> for ScalarVisitor {
            type Value = RawScalar;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number or a string")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawScalar, E> {
                Ok(RawScalar::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawScalar, E> {
                Ok(RawScalar::Int(v.min(i64::MAX as u64) as i64))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<RawScalar, E> {
                Ok(RawScalar::Float(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawScalar, E> {
                Ok(RawScalar::Text(v.to_owned()))
            }
        }
        deserializer.deserialize_any(ScalarVisitor)
    }
}

/// A declared port: `5433` (any local address) or `"127.0.0.1:5433"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawPort {
    Number(i64),
    Address(String),
}

impl<'de> Deserialize<'de> for RawPort {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PortVisitor;
        impl Visitor<'_> for PortVisitor {
            type Value = RawPort;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a port number or an \"address:port\" string")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawPort, E> {
                Ok(RawPort::Number(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawPort, E> {
                Ok(RawPort::Number(v.min(i64::MAX as u64) as i64))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawPort, E> {
                Ok(RawPort::Address(v.to_owned()))
            }
        }
        deserializer.deserialize_any(PortVisitor)
    }
}

/// `depends-on`: a list of names (each waits for `healthy`) or a table of name to
/// condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawDependsOn {
    List(Vec<Spanned<String>>),
    Table(Vec<(Spanned<String>, Spanned<RawDependency>)>),
}

/// One entry of the table form: `db = "healthy"`, or `db = { condition = "healthy",
/// restart = true }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawDependency {
    Condition(String),
    Table(RawDependencyTable),
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawDependencyTable {
    pub condition: Option<Spanned<String>>,
    pub restart: Option<Spanned<bool>>,
}

impl<'de> Deserialize<'de> for RawDependency {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DependencyVisitor;
        impl<'de> Visitor<'de> for DependencyVisitor {
            type Value = RawDependency;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "a condition (\"started\", \"healthy\" or \"completed\") or a table \
                     { condition = \"healthy\", restart = true }",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawDependency, E> {
                Ok(RawDependency::Condition(v.to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawDependency, A::Error> {
                RawDependencyTable::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(RawDependency::Table)
            }
        }
        deserializer.deserialize_any(DependencyVisitor)
    }
}

impl<'de> Deserialize<'de> for RawDependsOn {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DependsVisitor;
        impl<'de> Visitor<'de> for DependsVisitor {
            type Value = RawDependsOn;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "a list of service names or a table of service = \"condition\" \
                     (condition: started, healthy or completed) or service = { condition = \"healthy\", restart = true }",
                )
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawDependsOn, A::Error> {
                let mut names = Vec::new();
                while let Some(name) = seq.next_element()? {
                    names.push(name);
                }
                Ok(RawDependsOn::List(names))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawDependsOn, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(RawDependsOn::Table(entries))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawDependsOn, E> {
                Err(E::custom(format!(
                    "`depends-on` is a list: write [\"{v}\"], or {{ {v} = \"healthy\" }}"
                )))
            }
        }
        deserializer.deserialize_any(DependsVisitor)
    }
}

/// The names of the keys a raw table accepts, read from its serde derive, so that a
/// misspelt key can be matched against exactly the keys serde would have taken.
pub fn keys_of<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    struct Capture;
    #[derive(Debug)]
    struct Captured(&'static [&'static str]);
    impl fmt::Display for Captured {
        fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("captured")
        }
    }
    impl std::error::Error for Captured {}
    impl de::Error for Captured {
        fn custom<M: fmt::Display>(_: M) -> Self {
            Captured(&[])
        }
    }
    impl<'de> Deserializer<'de> for Capture {
        type Error = Captured;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Captured> {
            Err(Captured(&[]))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Captured> {
            Err(Captured(fields))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map
            enum identifier ignored_any
        }
    }
    match T::deserialize(Capture) {
        Err(Captured(fields)) => fields,
        Ok(_) => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::IntoDeserializer;

    #[test]
    fn keys_of_reads_the_serde_field_names() {
        let keys = keys_of::<RawService>();
        assert!(keys.contains(&"depends-on"));
        assert!(keys.contains(&"command"));
        assert!(!keys.contains(&"comand"));
        assert_eq!(keys_of::<RawRestartLimit>(), ["count", "within"]);
    }

    #[test]
    fn duration_rejects_a_bare_number_with_a_hint() {
        let number = IntoDeserializer::<de::value::Error>::into_deserializer(30_i64);
        let err = RawDuration::deserialize(number).unwrap_err();
        assert!(err.to_string().contains("\"30s\""), "{err}");
    }
}
