//! `muster.toml`: reading, checking and turning it into a [`Spec`].
//!
//! This module owns the config file from bytes on disk to the validated [`Spec`], and
//! nothing past it: no process is started and nothing is written. The way through is
//! `sources` (the file and those it includes, merged, `${VAR}` expanded) → `raw` (serde
//! types, every key optional) → `recover` (all syntax and type errors at once) →
//! `validate` (values, files, programs, dependencies, ports). Every problem is a
//! [`Diagnostic`] pointing into the file it is in; only a clean config yields a `Spec`.

pub(crate) mod envfile;
pub(crate) mod executable;
mod foreign;
mod interpolate;
mod keypath;
mod locate;
mod raw;
mod recover;
mod replicas;
mod sources;
mod spec;
mod syntax;
mod validate;
pub mod values;

use std::io::Read;
use std::path::{Path, PathBuf};

pub use replicas::{Overrides, fill as fill_replica};
pub use spec::*;
pub use validate::defaults;

use crate::diagnostic::{Diagnostic, Report};

/// The largest config file muster reads. Real ones are a few kilobytes; this keeps a
/// wrong `-f` (a log file, a disk image) from being read into memory.
pub const MAX_FILE_SIZE: u64 = 4 << 20;

/// The file name looked for when a directory is given.
pub const DEFAULT_FILE_NAME: &str = "muster.toml";

/// A config that passed every check, and the warnings it came with.
#[derive(Debug)]
pub struct Loaded {
    pub spec: Spec,
    pub warnings: Report,
}

/// Why a config file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read `{}`: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{}` is larger than {} MiB; is it really a muster config?", path.display(), MAX_FILE_SIZE >> 20)]
    TooLarge { path: PathBuf },
    #[error("`{}` is not UTF-8 text (invalid byte at line {line}, column {column})", path.display())]
    NotUtf8 {
        path: PathBuf,
        line: usize,
        column: usize,
    },
    #[error("`{}` has {} error(s)", .0.path.display(), .0.error_count())]
    Invalid(Report),
}

impl Error {
    /// Every problem as a report, for rendering; file-level problems have no span.
    pub fn into_report(self) -> Report {
        match self {
            Error::Invalid(report) => report,
            other => {
                let path = match &other {
                    Error::Read { path, .. }
                    | Error::TooLarge { path }
                    | Error::NotUtf8 { path, .. } => path.clone(),
                    Error::Invalid(_) => unreachable!("handled above"),
                };
                let help = match &other {
                    Error::Read { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                        Some(format!(
                            "run muster where {DEFAULT_FILE_NAME} is, or pass its path with -f (or MUSTER_FILE)"
                        ))
                    }
                    Error::NotUtf8 { .. } => Some("save the file as UTF-8".to_owned()),
                    Error::TooLarge { .. } => Some("check the path given with -f".to_owned()),
                    _ => None,
                };
                let mut report = Report::new(&path, "");
                report.push(Diagnostic::error("unreadable", other.to_string()).help_opt(help));
                report
            }
        }
    }
}

/// Every table of the schema with the keys it accepts, as serde reads them: the
/// source of truth for the documentation and its tests.
pub fn schema() -> Vec<(&'static str, &'static [&'static str])> {
    use raw::*;
    vec![
        ("top level", keys_of::<RawConfig>()),
        ("settings", keys_of::<RawSettings>()),
        ("settings.logs", keys_of::<RawLogSettings>()),
        ("settings.api", keys_of::<RawApiSettings>()),
        ("settings.history", keys_of::<RawHistorySettings>()),
        ("services.NAME", keys_of::<RawService>()),
        ("ready / alive", keys_of::<RawProbe>()),
        ("backoff", keys_of::<RawBackoff>()),
        ("restart-limit", keys_of::<RawRestartLimit>()),
        ("proxy", keys_of::<RawProxy>()),
        ("cluster", keys_of::<RawCluster>()),
        ("limits", keys_of::<RawLimits>()),
        ("depends-on.NAME", keys_of::<RawDependencyTable>()),
        ("hooks", keys_of::<RawHook>()),
        ("router", keys_of::<RawRouter>()),
        ("pools.NAME", keys_of::<RawPool>()),
    ]
}

/// Reads and validates the config at `path` (a file, or a directory holding
/// `muster.toml`). Relative paths inside it are resolved from its directory.
pub fn load(path: &Path) -> Result<Loaded, Error> {
    let (path, absolute, source) = read_main(path)?;
    from_source(&path, &absolute, source)
}

/// [`load`], and the config as muster runs it: the included files merged and every
/// `${VAR}` expanded, as TOML text (`muster check --show`).
pub fn load_shown(path: &Path) -> Result<(Loaded, String), Error> {
    let (path, absolute, source) = read_main(path)?;
    let (loaded, shown) = build(&path, &absolute, source, true)?;
    Ok((loaded, shown.unwrap_or_default()))
}

/// The main file's path as given, absolute, and its text.
fn read_main(path: &Path) -> Result<(PathBuf, PathBuf, String), Error> {
    let path = if path.is_dir() {
        path.join(DEFAULT_FILE_NAME)
    } else {
        path.to_path_buf()
    };
    let read_error = |source| Error::Read {
        path: path.clone(),
        source,
    };
    let file = std::fs::File::open(&path).map_err(read_error)?;
    let mut bytes = Vec::new();
    // Read one byte past the limit rather than trusting the file's size: special files
    // (pipes, /dev/zero) have none.
    file.take(MAX_FILE_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > MAX_FILE_SIZE {
        return Err(Error::TooLarge { path });
    }
    let source = String::from_utf8(bytes).map_err(|err| {
        let valid = &err.as_bytes()[..err.utf8_error().valid_up_to()];
        let valid = std::str::from_utf8(valid).unwrap_or_default();
        let position = Report::new(&path, valid).position(valid.len());
        Error::NotUtf8 {
            path: path.clone(),
            line: position.line,
            column: position.column,
        }
    })?;
    let absolute = std::path::absolute(&path).map_err(|source| Error::Read {
        path: path.clone(),
        source,
    })?;
    Ok((path, absolute, source))
}

/// Validates `source` as if read from `path` (shown in messages); `absolute` is where
/// relative paths start from and what the spec records.
pub fn from_source(path: &Path, absolute: &Path, source: String) -> Result<Loaded, Error> {
    build(path, absolute, source, false).map(|(loaded, _)| loaded)
}

/// Reads the included files, merges, expands, deserializes and validates; with `show`,
/// also renders the merged tree as TOML.
fn build(
    path: &Path,
    absolute: &Path,
    source: String,
    show: bool,
) -> Result<(Loaded, Option<String>), Error> {
    let mut problems = Vec::new();
    let sources = sources::Sources::gather(path, absolute, source, &mut problems);
    build_from(
        std::sync::Arc::new(sources),
        absolute,
        &Overrides::new(),
        show,
        problems,
    )
}

/// The config `spec` was loaded from, as it was read then, with the replica counts of
/// `overrides` instead of the file's (`muster scale`). The files are not read again;
/// what validation checks on the machine (programs, env files) is.
pub fn rescale(spec: &Spec, overrides: &Overrides) -> Result<Loaded, Error> {
    let Some(sources) = spec.origin.0.clone() else {
        let mut report = Report::new(&spec.path, "");
        report.push(Diagnostic::error(
            "unreadable",
            "this configuration was not loaded from files; it cannot be expanded again",
        ));
        return Err(Error::Invalid(report));
    };
    build_from(sources, &spec.path, overrides, false, Vec::new()).map(|(loaded, _)| loaded)
}

fn build_from(
    sources: std::sync::Arc<sources::Sources>,
    absolute: &Path,
    overrides: &Overrides,
    show: bool,
    mut problems: Vec<crate::diagnostic::Diagnostic>,
) -> Result<(Loaded, Option<String>), Error> {
    let path = sources.files[0].shown.clone();
    let mut shown = None;
    let mut sets = std::collections::BTreeMap::new();
    let spec = sources.merge(&mut problems).and_then(|(mut tree, removed)| {
        if show {
            let plain = sources::to_plain(tree.get_ref());
            let files: Vec<String> = sources
                .merge_order()
                .iter()
                .map(|f| f.display().to_string())
                .collect();
            // Values as the services get them: a `$` here is literal, so this text is
            // for reading, not for loading again as it is.
            shown = Some(format!(
                "# {} as muster runs it: every ${{VAR}} expanded, values as the services get them\n{}\n{}",
                files.join(" + "),
                if files.len() > 1 { "# (the files merged in this order, later ones winning)" } else { "#" },
                toml::to_string(&plain).unwrap_or_default()
            ));
        }
        sets = replicas::expand(tree.get_mut(), overrides, &mut problems);
        recover::deserialize_tree(tree, removed, &mut problems)
    });
    let spec = spec.and_then(|recovered| {
        validate::validate(
            recovered.config,
            &recovered.removed,
            absolute,
            &mut problems,
        )
    });
    let mut report = Report::new(&path, sources.files[0].text.clone());
    report.included = sources.included();
    report.diagnostics = replicas::once_per_set(problems, &sets);
    report.sort();
    match spec {
        Some(mut spec) if !report.has_errors() => {
            for (set, replicas) in &sets {
                for index in 0..replicas.count {
                    if let Some(service) = spec.services.get_mut(set.instance(index).as_str()) {
                        std::sync::Arc::make_mut(service).replica = Some(Replica {
                            set: set.clone(),
                            index,
                        });
                    }
                }
            }
            spec.replica_sets = sets;
            spec.origin = Origin(Some(sources));
            Ok((
                Loaded {
                    spec,
                    warnings: report,
                },
                shown,
            ))
        }
        _ => {
            if !report.has_errors() {
                // Defensive: a spec is only withheld for a reason that was reported.
                report.push(Diagnostic::error(
                    "invalid",
                    "the configuration is not valid",
                ));
            }
            Err(Error::Invalid(report))
        }
    }
}

/// The state directory a config file names, read leniently: only `settings.state-dir`
/// matters (default `.muster`), relative to the file's directory, so a config with
/// mistakes elsewhere still leads to its running supervisor.
pub fn state_dir_of(path: &Path) -> Result<PathBuf, String> {
    let path = if path.is_dir() {
        path.join(DEFAULT_FILE_NAME)
    } else {
        path.to_path_buf()
    };
    let absolute = std::path::absolute(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let text = std::fs::read_to_string(&absolute)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    // Scanned for the one key when that can be trusted (see `locate`); otherwise the
    // file and what it includes, merged and expanded, ignoring every problem: a config
    // with mistakes elsewhere must still lead to its running supervisor.
    let named = match locate::named_state_dir(&absolute, &text) {
        Some(named) => named,
        None => {
            let sources = sources::Sources::gather(&path, &absolute, text, &mut Vec::new());
            sources.merge(&mut Vec::new()).and_then(|(tree, _)| {
                tree.get_ref()
                    .get("settings")?
                    .get_ref()
                    .get("state-dir")?
                    .get_ref()
                    .as_str()
                    .map(str::to_owned)
            })
        }
    }
    .unwrap_or_else(|| defaults::STATE_DIR.to_owned());
    let dir = absolute.parent().unwrap_or(Path::new("/"));
    Ok(dir.join(named))
}
