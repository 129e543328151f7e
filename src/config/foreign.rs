//! Keys people bring from other tools (docker compose, systemd units, supervisord,
//! Kubernetes, Procfile runners), each mapped to what muster calls it, or to why muster
//! has no such thing and what to do instead.
//!
//! Spelling distance alone gets these wrong: `cmd` is one letter from `cwd`, and
//! `environment` is far from `env`. This table is consulted before the nearest-spelling
//! suggestion, and only for the table the key was found in.

/// One family of foreign names and the advice for them.
struct Alias {
    /// The names as written elsewhere, lowercase with `-` for `_`.
    names: &'static [&'static str],
    /// A key that only the intended muster table has, so that advice for a service key
    /// is not given in `[settings]`.
    table_has: &'static str,
    /// The muster key to use, if there is one.
    key: Option<&'static str>,
    /// Why, or how to write it.
    advice: &'static str,
}

const SERVICE: &str = "command";
const PROBE: &str = "tcp";
const HOOK: &str = "on";
const TOP: &str = "services";

const ALIASES: &[Alias] = &[
    // [services.NAME]
    Alias {
        names: &["environment", "environ", "envs", "vars", "variables"],
        table_has: SERVICE,
        key: Some("env"),
        advice: "write env = { LOG_LEVEL = \"debug\" }",
    },
    Alias {
        names: &[
            "environment-file",
            "environment-files",
            "environmentfile",
            "envfile",
            "env-files",
            "dotenv",
        ],
        table_has: SERVICE,
        key: Some("env-file"),
        advice: "write env-file = \".env\" (or a list of files)",
    },
    Alias {
        names: &[
            "working-dir",
            "workdir",
            "working-directory",
            "workingdirectory",
            "directory",
            "dir",
            "chdir",
            "cd",
        ],
        table_has: SERVICE,
        key: Some("cwd"),
        advice: "write cwd = \"services/api\" (relative to the config file's directory)",
    },
    Alias {
        names: &[
            "cmd",
            "entrypoint",
            "exec",
            "exec-start",
            "execstart",
            "program",
            "args",
            "argv",
            "run",
        ],
        table_has: SERVICE,
        key: Some("command"),
        advice: "write command = [\"program\", \"arg\"] (run directly), or shell = \"...\" to run a line with /bin/sh -c",
    },
    Alias {
        names: &["script", "sh", "bash", "shell-command"],
        table_has: SERVICE,
        key: Some("shell"),
        advice: "write shell = \"...\" to run the line with /bin/sh -c",
    },
    Alias {
        names: &[
            "healthcheck",
            "health-check",
            "health",
            "readiness",
            "readiness-probe",
            "readinessprobe",
            "startup-probe",
            "startupprobe",
        ],
        table_has: SERVICE,
        key: Some("ready"),
        advice: "muster has two probes: `ready` proves a start worked (dependents wait for it), \
                 `alive` watches a running service; for example ready = { http = \"http://127.0.0.1:8080/health\" }",
    },
    Alias {
        names: &["liveness", "liveness-probe", "livenessprobe", "keepalive"],
        table_has: SERVICE,
        key: Some("alive"),
        advice: "write alive = { http = \"http://127.0.0.1:8080/health\", interval = \"10s\" }",
    },
    Alias {
        names: &[
            "depends",
            "dependencies",
            "requires",
            "after",
            "wants",
            "needs",
            "links",
            "depend-on",
        ],
        table_has: SERVICE,
        key: Some("depends-on"),
        advice: "write depends-on = [\"db\"], or { db = \"healthy\", migrate = \"completed\" }",
    },
    Alias {
        names: &[
            "restart-policy",
            "autorestart",
            "restart-on",
            "restartpolicy",
        ],
        table_has: SERVICE,
        key: Some("restart"),
        advice: "write restart = \"on-failure\" (or \"always\", \"never\")",
    },
    Alias {
        names: &["restart-sec", "restartsec", "restart-delay", "delay"],
        table_has: SERVICE,
        key: Some("backoff"),
        advice: "write backoff = { initial = \"1s\", max = \"30s\" }",
    },
    Alias {
        names: &[
            "start-limit-burst",
            "startlimitburst",
            "start-limit-interval",
            "max-restarts",
            "startretries",
            "retries",
        ],
        table_has: SERVICE,
        key: Some("restart-limit"),
        advice: "write restart-limit = { count = 5, within = \"1m\" }",
    },
    Alias {
        names: &[
            "stop-grace-period",
            "stopwaitsecs",
            "timeout-stop-sec",
            "timeoutstopsec",
            "kill-timeout",
            "grace-period",
            "termination-grace-period-seconds",
        ],
        table_has: SERVICE,
        key: Some("stop-timeout"),
        advice: "write stop-timeout = \"10s\", how long after `stop-signal` before SIGKILL",
    },
    Alias {
        names: &["stopsignal", "kill-signal", "killsignal"],
        table_has: SERVICE,
        key: Some("stop-signal"),
        advice: "write stop-signal = \"SIGINT\"",
    },
    Alias {
        names: &["expose", "listen", "bind", "published", "container-port"],
        table_has: SERVICE,
        key: Some("ports"),
        advice: "write ports = [8080] or [\"127.0.0.1:8080\"], the ports the service listens on (checked free before it starts)",
    },
    Alias {
        names: &["auto-start", "enabled", "enable", "start-on-boot"],
        table_has: SERVICE,
        key: Some("autostart"),
        advice: "write autostart = false to start the service only on demand",
    },
    Alias {
        names: &["budget", "gpu-group"],
        table_has: SERVICE,
        key: Some("pool"),
        advice: "a budget that services share is a pool: write pool = \"gpu0\" with a [pools.gpu0] table \
                 (capacity = \"24GiB\" or exclusive = true)",
    },
    Alias {
        names: &["uid", "run-as", "runas", "username"],
        table_has: SERVICE,
        key: Some("user"),
        advice: "write user = \"www-data\" (a name or a number); muster must run as root to switch users",
    },
    Alias {
        names: &["gid", "groupname"],
        table_has: SERVICE,
        key: Some("group"),
        advice: "write group = \"www-data\" (a name or a number), a group the user is in",
    },
    Alias {
        names: &["ulimit", "ulimits", "rlimits", "rlimit"],
        table_has: SERVICE,
        key: Some("limits"),
        advice: "write limits = { nofile = 65536, core = 0 }",
    },
    Alias {
        names: &[
            "mem-limit",
            "memory-limit",
            "max-memory-restart",
            "memorymax",
            "memory-high",
        ],
        table_has: SERVICE,
        key: Some("memory-max"),
        advice: "write memory-max = \"512MiB\", the most memory the service's processes may use together",
    },
    Alias {
        names: &["cpus", "cpu-quota", "cpuquota", "cpu-limit"],
        table_has: SERVICE,
        key: Some("cpu-max"),
        advice: "write cpu-max = 1.5 (CPUs) or \"150%\"",
    },
    Alias {
        names: &["oom-score-adjust", "oomscoreadjust"],
        table_has: SERVICE,
        key: Some("oom-score-adj"),
        advice: "write oom-score-adj = 500 (from -1000, never killed, to 1000, killed first)",
    },
    Alias {
        names: &["nice-level", "nicelevel", "niceness"],
        table_has: SERVICE,
        key: Some("nice"),
        advice: "write nice = 10 (from -20, most favoured, to 19, least)",
    },
    Alias {
        names: &["exec-reload", "reload-command", "reload"],
        table_has: SERVICE,
        key: Some("reload-signal"),
        advice: "write reload-signal = \"SIGHUP\": `muster reload NAME` then sends it instead of restarting the service",
    },
    Alias {
        names: &[
            "image",
            "build",
            "container-name",
            "volumes",
            "networks",
            "network-mode",
            "deploy",
            "privileged",
            "cap-add",
            "labels",
        ],
        table_has: SERVICE,
        key: None,
        advice: "muster runs programs directly, not containers, so there is no equivalent; put the program to run in `command`",
    },
    Alias {
        names: &["scale", "numprocs", "instances", "deploy"],
        table_has: SERVICE,
        key: Some("replicas"),
        advice: "`replicas = N` runs N instances, NAME.0 …; `muster scale NAME N` changes the count at runtime",
    },
    Alias {
        names: &["name", "hostname"],
        table_has: SERVICE,
        key: None,
        advice: "a service's name is the name of its table: [services.NAME]",
    },
    Alias {
        names: &["priority", "order", "start-order"],
        table_has: SERVICE,
        key: None,
        advice: "the start order comes from `depends-on`: a service starts after what it depends on",
    },
    Alias {
        names: &[
            "logging",
            "log-file",
            "logfile",
            "stdout-logfile",
            "stderr-logfile",
            "standard-output",
        ],
        table_has: SERVICE,
        key: None,
        advice: "output goes to STATE-DIR/logs/NAME.log; rotation is set for all services in [settings.logs]",
    },
    // ready = { ... } / alive = { ... }
    Alias {
        names: &["test", "cmd", "command", "run", "script"],
        table_has: PROBE,
        key: Some("exec"),
        advice: "write exec = [\"pg_isready\", \"-q\"], which passes when the command exits 0",
    },
    Alias {
        names: &["url", "path", "endpoint", "get", "http-get", "httpget"],
        table_has: PROBE,
        key: Some("http"),
        advice: "write http = \"http://127.0.0.1:8080/health\"",
    },
    Alias {
        names: &[
            "port",
            "tcp-socket",
            "tcpsocket",
            "address",
            "addr",
            "connect",
        ],
        table_has: PROBE,
        key: Some("tcp"),
        advice: "write tcp = \"127.0.0.1:5432\"",
    },
    Alias {
        names: &["retries", "failure-threshold", "failurethreshold"],
        table_has: PROBE,
        key: Some("failures"),
        advice: "write failures = 3 in `alive` (failed checks in a row before the service is unhealthy); `ready` keeps trying until its `timeout`",
    },
    Alias {
        names: &["success-threshold", "successthreshold"],
        table_has: PROBE,
        key: Some("successes"),
        advice: "write successes = 1 in `alive`",
    },
    Alias {
        names: &[
            "start-period",
            "initial-delay-seconds",
            "initialdelayseconds",
            "deadline",
        ],
        table_has: PROBE,
        key: Some("timeout"),
        advice: "for `ready`, `timeout` is the start deadline: write timeout = \"60s\"",
    },
    Alias {
        names: &["period-seconds", "periodseconds", "every", "frequency"],
        table_has: PROBE,
        key: Some("interval"),
        advice: "write interval = \"10s\"",
    },
    Alias {
        names: &["expect", "expected-status", "status-code", "code"],
        table_has: PROBE,
        key: Some("status"),
        advice: "write status = 200",
    },
    // [[hooks]]
    Alias {
        names: &["command", "cmd", "exec", "program", "script"],
        table_has: HOOK,
        key: Some("run"),
        advice: "write run = [\"notify-send\", \"muster\"]; the event is in its environment as MUSTER_EVENT_JSON",
    },
    Alias {
        names: &["events", "event", "when", "trigger", "triggers"],
        table_has: HOOK,
        key: Some("on"),
        advice: "write on = [\"failed\", \"unhealthy\"]",
    },
    // The top level
    Alias {
        names: &["groups", "budgets"],
        table_has: TOP,
        key: Some("pools"),
        advice: "write [pools.gpu0] with capacity = \"24GiB\" (or exclusive = true), and pool = \"gpu0\" in its services",
    },
    Alias {
        names: &["version"],
        table_has: TOP,
        key: None,
        advice: "remove it (there is one format of muster.toml, and it has no version key)",
    },
];

/// The alias family `unknown` belongs to, among those for the table with `expected`.
fn find(unknown: &str, expected: &[String]) -> Option<&'static Alias> {
    let normal = unknown.to_ascii_lowercase().replace('_', "-");
    ALIASES
        .iter()
        .filter(|a| expected.iter().any(|e| e == a.table_has))
        .find(|a| a.names.contains(&normal.as_str()))
}

/// Advice for `unknown`, found in a table whose valid keys are `expected`, when it is a
/// name from another tool.
pub fn advice(unknown: &str, expected: &[String]) -> Option<String> {
    let alias = find(unknown, expected)?;
    match alias.key {
        Some(key) if expected.iter().any(|e| e == key) => {
            Some(format!("did you mean `{key}`? {}", alias.advice))
        }
        Some(_) => None,
        None => Some(format!("muster has no `{unknown}`: {}", alias.advice)),
    }
}

/// The muster key `unknown` stands for in a table with `expected` keys, if any.
pub fn meant(unknown: &str, expected: &[String]) -> Option<&'static str> {
    find(unknown, expected)?.key
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::raw::{RawConfig, RawHook, RawProbe, RawService, keys_of};

    fn keys<'de, T: serde::Deserialize<'de>>() -> Vec<String> {
        keys_of::<T>().iter().map(|k| (*k).to_owned()).collect()
    }

    #[test]
    fn compose_and_systemd_names_lead_to_the_muster_key() {
        let service = keys::<RawService>();
        for (foreign, key) in [
            ("environment", "`env`"),
            ("working_dir", "`cwd`"),
            ("WorkingDirectory", "`cwd`"),
            ("healthcheck", "`ready`"),
            ("cmd", "`command`"),
            ("entrypoint", "`command`"),
            ("restart_policy", "`restart`"),
            ("expose", "`ports`"),
            ("stop_grace_period", "`stop-timeout`"),
            ("EnvironmentFile", "`env-file`"),
        ] {
            let advice = advice(foreign, &service).unwrap_or_default();
            assert!(
                advice.starts_with(&format!("did you mean {key}?")),
                "{foreign}: {advice}"
            );
        }
        let uid = advice("uid", &service).unwrap();
        assert!(uid.starts_with("did you mean `user`?"), "{uid}");
        let budget = advice("budget", &service).unwrap();
        assert!(budget.starts_with("did you mean `pool`?"), "{budget}");
        assert!(
            advice("comand", &service).is_none(),
            "typos are left to spelling"
        );
        assert_eq!(meant("ExecStart", &service), Some("command"));
        assert_eq!(meant("user", &service), None);
    }

    #[test]
    fn advice_depends_on_the_table() {
        let probe = keys::<RawProbe>();
        assert!(advice("test", &probe).unwrap().contains("`exec`"));
        assert!(advice("retries", &probe).unwrap().contains("`failures`"));
        assert!(
            advice("retries", &keys::<RawService>())
                .unwrap()
                .contains("`restart-limit`")
        );
        assert!(
            advice("command", &keys::<RawHook>())
                .unwrap()
                .contains("`run`")
        );
        assert!(advice("environment", &probe).is_none());
        assert!(
            advice("version", &keys::<RawConfig>())
                .unwrap()
                .contains("remove it")
        );
        // Every suggested key exists in the table the advice is given for.
        for alias in ALIASES {
            let table = match alias.table_has {
                SERVICE => keys::<RawService>(),
                PROBE => keys::<RawProbe>(),
                HOOK => keys::<RawHook>(),
                _ => keys::<RawConfig>(),
            };
            assert!(table.iter().any(|k| k == alias.table_has));
            if let Some(key) = alias.key {
                assert!(table.iter().any(|k| k == key), "{key}");
            }
            for name in alias.names {
                assert!(!table.iter().any(|k| k == name), "{name} is a real key");
            }
        }
    }
}
