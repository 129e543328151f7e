//! `replicas = N`: one `[services.NAME]` table run as N instances, `NAME.0` …
//! `NAME.{N-1}`.
//!
//! The expansion happens on the merged tree, before anything is deserialized or
//! validated: each instance is then an ordinary service, checked like any other (a port
//! two instances would share is a clash, with its place in the file), and the rest of
//! muster sees services, not templates. In each instance's strings `{replica}` is its
//! number (`{replica:02}` zero-padded to two digits); a number `port` is the first
//! instance's, and instance i gets that port plus i. A `depends-on` (and a hook's
//! `services`) naming the set names every instance, so a dependent waits for them all.
//!
//! The count can differ from the file's (`muster scale`): the expansion takes overrides,
//! and [`crate::config::rescale`] runs it again on the config as it was loaded.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ops::Range;

use toml::Spanned;
use toml::de::{DeArray, DeTable, DeValue};

use crate::config::spec::ReplicaSet;
use crate::diagnostic::Diagnostic;
use crate::name::{MAX_REPLICAS, ServiceName};

/// Counts that replace the file's, by set name (`muster scale`).
pub type Overrides = BTreeMap<String, u32>;

/// Replaces every table with `replicas` by its instances and points what names the set
/// at all of them. Returns the sets, with the count run and the count in the file.
pub(super) fn expand(
    tree: &mut DeTable<'_>,
    overrides: &Overrides,
    problems: &mut Vec<Diagnostic>,
) -> BTreeMap<ServiceName, ReplicaSet> {
    let mut sets = BTreeMap::new();
    let Some(DeValue::Table(services)) = tree.get_mut("services").map(Spanned::get_mut) else {
        return sets;
    };
    let names: Vec<Spanned<Cow<'_, str>>> = services.keys().cloned().collect();
    for key in names {
        // `web.1`: an instance's name, which a table cannot take. Other names with a
        // `.` are refused by validation, as any bad name.
        if key.get_ref().contains('.') && ServiceName::new(key.get_ref()).is_ok() {
            services.remove(key.get_ref().as_ref());
            problems.push(
                Diagnostic::error(
                    "reserved-name",
                    format!(
                        "`{}`: a `.` in a service name is kept for the instances of a service with `replicas`",
                        key.get_ref()
                    ),
                )
                .at(key.span(), "")
                .help("name the service without `.`, or give one service `replicas = N` to run NAME.0, NAME.1, …"),
            );
            continue;
        }
        let Some(DeValue::Table(table)) = services
            .get_mut(key.get_ref().as_ref())
            .map(Spanned::get_mut)
        else {
            continue;
        };
        let Some(replicas) = table.remove("replicas") else {
            continue;
        };
        let Some(declared) = count(&key, &replicas, table, problems) else {
            continue;
        };
        let Ok(set) = ServiceName::new(key.get_ref()) else {
            // Validation reports the name.
            continue;
        };
        let running = overrides.get(set.as_str()).copied().unwrap_or(declared);
        let Some((key, template)) = services.remove_entry(key.get_ref().as_ref()) else {
            continue;
        };
        for index in 0..running {
            let mut instance = template.clone();
            substitute(&mut instance, index);
            let name = format!("{}.{index}", key.get_ref());
            services.insert(Spanned::new(key.span(), Cow::Owned(name)), instance);
        }
        sets.insert(
            set,
            ReplicaSet {
                count: running,
                declared,
            },
        );
    }
    if !sets.is_empty() {
        point_at_instances(tree, &sets);
    }
    port_in_upstreams(tree);
    sets
}

/// The problems of a config whose instances repeat each other's (each instance is
/// checked, and a mistake in the table is in every one) said once: the first, for
/// instance 0.
pub(super) fn once_per_set(
    problems: Vec<Diagnostic>,
    sets: &BTreeMap<ServiceName, ReplicaSet>,
) -> Vec<Diagnostic> {
    if sets.is_empty() {
        return problems;
    }
    let Ok(instance) = regex::Regex::new(r"\b([a-z0-9][a-z0-9_-]*)\.[0-9]+\b") else {
        return problems;
    };
    let mut seen = std::collections::BTreeSet::new();
    problems
        .into_iter()
        .filter(|problem| {
            let message = instance.replace_all(&problem.message, |found: &regex::Captures| {
                if sets.contains_key(&found[1]) {
                    format!("{}.N", &found[1])
                } else {
                    found[0].to_owned()
                }
            });
            let place = problem.primary.as_ref().map(|label| label.span.clone());
            seen.insert((
                problem.code,
                message.into_owned(),
                place.map(|p| (p.start, p.end)),
            ))
        })
        .collect()
}

/// `{port}` in `proxy.upstream` is the service's `port`, where that is a number.
fn port_in_upstreams(tree: &mut DeTable<'_>) {
    let Some(DeValue::Table(services)) = tree.get_mut("services").map(Spanned::get_mut) else {
        return;
    };
    for (_, service) in services.iter_mut() {
        let DeValue::Table(table) = service.get_mut() else {
            continue;
        };
        let port = match table.get("port").map(Spanned::get_ref) {
            Some(DeValue::Integer(integer)) => {
                match i64::from_str_radix(integer.as_str(), integer.radix()) {
                    Ok(port) => port.to_string(),
                    Err(_) => continue,
                }
            }
            // An instance's own port (see `substitute`).
            Some(DeValue::String(digits))
                if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) =>
            {
                digits.to_string()
            }
            _ => continue,
        };
        if let Some(DeValue::Table(proxy)) = table.get_mut("proxy").map(Spanned::get_mut)
            && let Some(DeValue::String(upstream)) = proxy.get_mut("upstream").map(Spanned::get_mut)
            && upstream.contains(crate::config::spec::PORT_PLACEHOLDER)
        {
            *upstream = Cow::Owned(upstream.replace(crate::config::spec::PORT_PLACEHOLDER, &port));
        }
    }
}

/// The count `replicas` asks for, or `None` (reported) when it is not one muster runs.
fn count(
    key: &Spanned<Cow<'_, str>>,
    replicas: &Spanned<DeValue<'_>>,
    table: &DeTable<'_>,
    problems: &mut Vec<Diagnostic>,
) -> Option<u32> {
    let name = key.get_ref();
    let span = replicas.span();
    let value = match replicas.get_ref() {
        DeValue::Integer(integer) => i64::from_str_radix(integer.as_str(), integer.radix()).ok(),
        _ => None,
    };
    let problem = match value {
        None => Some(format!(
            "`services.{name}.replicas` must be a whole number of instances, not {}",
            replicas.get_ref().type_str()
        )),
        Some(n) if n < 1 => Some(format!(
            "`services.{name}.replicas` is {n}: a service runs at least one instance"
        )),
        Some(n) if n > i64::from(MAX_REPLICAS) => Some(format!(
            "`services.{name}.replicas` is {n}, more than {MAX_REPLICAS}: each instance is a whole \
             service with its own process, log and history, and a count that large is almost \
             surely a mistake"
        )),
        Some(_) => None,
    };
    if let Some(problem) = problem {
        problems.push(
            Diagnostic::error("invalid-value", problem)
                .at(span, "")
                .help(format!(
                    "give a number from 1 to {MAX_REPLICAS}; to run none, use `autostart = false` or `muster stop`"
                )),
        );
        return None;
    }
    if let Some(singleton) = table.get("singleton") {
        problems.push(
            Diagnostic::error(
                "conflict",
                format!("`services.{name}` has both `replicas` and `singleton`: a singleton runs once in the cluster"),
            )
            .at(span, "")
            .also(singleton.span(), "one instance in the cluster")
            .help("remove `replicas`, or `singleton`"),
        );
        return None;
    }
    if let Some(models) = table.get("models") {
        problems.push(
            Diagnostic::error(
                "conflict",
                format!(
                    "`services.{name}` has both `replicas` and `models`: the router sends a model to one service"
                ),
            )
            .at(span, "")
            .also(models.span(), "routed here")
            .help("declare one service per model server (each with its own `models`), or remove `replicas`"),
        );
        return None;
    }
    value.and_then(|n| u32::try_from(n).ok())
}

/// One instance's table: `{replica}` in every string, and its own `port`.
fn substitute(instance: &mut Spanned<DeValue<'_>>, index: u32) {
    fn strings(value: &mut DeValue<'_>, index: u32) {
        match value {
            DeValue::String(text) if text.contains("{replica") => {
                *text = Cow::Owned(fill(text, index));
            }
            DeValue::Array(items) => items.iter_mut().for_each(|v| strings(v.get_mut(), index)),
            DeValue::Table(table) => table
                .iter_mut()
                .for_each(|(_, v)| strings(v.get_mut(), index)),
            _ => {}
        }
    }
    strings(instance.get_mut(), index);
    let DeValue::Table(table) = instance.get_mut() else {
        return;
    };
    if let Some(port) = table.get_mut("port")
        && let DeValue::Integer(integer) = port.get_ref()
        && let Ok(first) = i64::from_str_radix(integer.as_str(), integer.radix())
    {
        // Written back as digits in a string, which `port` reads as the number. Out of
        // range is reported by validation, as for any port.
        *port.get_mut() = DeValue::String(Cow::Owned((first + i64::from(index)).to_string()));
    }
}

/// `text` with `{replica}` and `{replica:0W}` (zero-padded to W digits) replaced by
/// `index`. Anything else in braces is left as it is.
pub fn fill(text: &str, index: u32) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("{replica") {
        out.push_str(&rest[..at]);
        let after = &rest[at + "{replica".len()..];
        let Some(close) = after.find('}') else {
            out.push_str(&rest[at..]);
            return out;
        };
        let format = &after[..close];
        let width = match format {
            "" => Some(0),
            _ => format
                .strip_prefix(":0")
                .and_then(|w| w.parse::<usize>().ok())
                .filter(|w| *w <= 9),
        };
        match width {
            Some(width) => out.push_str(&format!("{index:0width$}")),
            None => out.push_str(&rest[at..at + "{replica".len() + close + 1]),
        }
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    out
}

/// `depends-on` of every service and `services` of every hook: a set's name becomes
/// the names of its instances.
fn point_at_instances(tree: &mut DeTable<'_>, sets: &BTreeMap<ServiceName, ReplicaSet>) {
    let instances = |name: &str| -> Option<Vec<String>> {
        let set = sets.get(name)?;
        Some((0..set.count).map(|i| format!("{name}.{i}")).collect())
    };
    if let Some(DeValue::Table(services)) = tree.get_mut("services").map(Spanned::get_mut) {
        for (_, service) in services.iter_mut() {
            if let DeValue::Table(table) = service.get_mut()
                && let Some(depends) = table.get_mut("depends-on")
            {
                let span = depends.span();
                let replaced = match depends.get_mut() {
                    DeValue::String(name) => instances(name).map(|names| {
                        let mut array = DeArray::new();
                        for name in names {
                            array.push(string(name, span.clone()));
                        }
                        DeValue::Array(array)
                    }),
                    DeValue::Array(items) => {
                        expand_list(items, &instances);
                        None
                    }
                    DeValue::Table(entries) => {
                        let keys: Vec<_> = entries.keys().cloned().collect();
                        for key in keys {
                            let Some(names) = instances(key.get_ref()) else {
                                continue;
                            };
                            if let Some((key, value)) = entries.remove_entry(key.get_ref().as_ref())
                            {
                                for name in names {
                                    entries.insert(
                                        Spanned::new(key.span(), Cow::Owned(name)),
                                        value.clone(),
                                    );
                                }
                            }
                        }
                        None
                    }
                    _ => None,
                };
                if let Some(replaced) = replaced {
                    *depends.get_mut() = replaced;
                }
            }
        }
    }
    if let Some(DeValue::Array(hooks)) = tree.get_mut("hooks").map(Spanned::get_mut) {
        for hook in hooks.iter_mut() {
            if let DeValue::Table(table) = hook.get_mut()
                && let Some(DeValue::Array(items)) = table.get_mut("services").map(Spanned::get_mut)
            {
                expand_list(items, &instances);
            }
        }
    }
}

/// A list of names with each set's name replaced, in place, by its instances. An
/// instance also named on its own (`["web", "web.2"]`) is listed once.
fn expand_list(items: &mut DeArray<'_>, instances: &dyn Fn(&str) -> Option<Vec<String>>) {
    let old = std::mem::replace(items, DeArray::new());
    let mut expanded = std::collections::BTreeSet::new();
    let mut listed = std::collections::BTreeSet::new();
    for item in old.iter().cloned() {
        let name = match item.get_ref() {
            DeValue::String(name) => Some(name.to_string()),
            _ => None,
        };
        match name.as_deref().and_then(instances) {
            Some(names) => {
                let span = item.span();
                for name in names {
                    if !listed.contains(&name) && expanded.insert(name.clone()) {
                        items.push(string(name, span.clone()));
                    }
                }
            }
            None => {
                if let Some(name) = name {
                    if expanded.contains(&name) {
                        continue;
                    }
                    listed.insert(name);
                }
                items.push(item);
            }
        }
    }
}

fn string<'a>(text: String, span: Range<usize>) -> Spanned<DeValue<'a>> {
    Spanned::new(span, DeValue::String(Cow::Owned(text)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_replaces_replica_and_its_padded_form_only() {
        assert_eq!(fill("gpu{replica}", 3), "gpu3");
        assert_eq!(fill("80{replica:02}", 3), "8003");
        assert_eq!(fill("{replica}-{replica:03}", 12), "12-012");
        assert_eq!(
            fill("{port} {replicas} {replica", 1),
            "{port} {replicas} {replica"
        );
        assert_eq!(fill("{replica:x}", 1), "{replica:x}");
    }
}
