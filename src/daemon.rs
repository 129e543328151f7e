//! The daemon as a library: everything `muster up` does except drawing it.
//!
//! [`Daemon::prepare`] takes the state lock (one supervisor per state directory, and
//! one per config file however its state directory is spelled), binds every listener
//! (the TCP API, the proxies, the router, then the socket, whose existence means they all accept)
//! and creates the [`Supervisor`]. [`Daemon::run`] stops what an earlier supervisor
//! left running, boots, serves the API and the proxies, and, when the shutdown future
//! resolves, a client asks, or nothing is left to supervise, shuts down cooperatively:
//! the proxies turn new clients away when the shutdown begins (the supervisor's `closing`
//! signal), the API keeps answering (a `start` gets 409) until every service is down
//! and the history closed, and only then does it stop accepting.
//!
//! With [`Options::systemd`], the daemon tells systemd how it is on `NOTIFY_SOCKET`
//! ([`crate::starter`]): readiness, a status line, reloads, the shutdown, and watchdog
//! pings for as long as the graph owner answers. As the first process of a PID
//! namespace (a container's entrypoint) it also ends, after its services, whatever else
//! still runs in the namespace ([`crate::supervisor::process::end_the_rest`]).
//!
//! A view (the CLI's `up`) subscribes to the supervisor's events between the two.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::{TcpListener, UnixListener};

use crate::api;
use crate::config::{ServiceName, Spec};
use crate::supervisor::lock::{LockError, StateLock};
use crate::supervisor::{Lifecycle, Phase, StartError, Supervisor};

/// How the daemon is run beyond its config.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Start only these services (and what they depend on); empty: every autostart one.
    pub only: Vec<ServiceName>,
    /// The state directory the config file names, when the spec's was overridden
    /// (`--state-dir`); a reload may not move it.
    pub file_state_dir: Option<PathBuf>,
    /// Speak systemd's notify protocol to `NOTIFY_SOCKET`, when it is set (a unit of
    /// `Type=notify`): not for the background supervisor of `up -d`, whose
    /// `NOTIFY_SOCKET` is the command waiting for it to be ready.
    pub systemd: bool,
}

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{error}; stop it with `muster down -f {}`", file.display())]
    AlreadyRunning { error: LockError, file: PathBuf },
    #[error("{0}")]
    Lock(LockError),
    #[error("{0}")]
    Tokens(String),
    #[error("cannot listen on {what}: {error}")]
    Listen { what: String, error: String },
    #[error("{0}")]
    Start(#[from] StartError),
}

impl DaemonError {
    /// Whether the user can fix it by changing what they asked (exit 2), rather than a
    /// failure of the machine (exit 1).
    pub fn is_usage(&self) -> bool {
        matches!(self, Self::AlreadyRunning { .. } | Self::Tokens(_))
    }
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Why the shutdown began: a signal's name, a client, or `None` when nothing was
    /// left to supervise.
    pub ended_by: Option<String>,
    /// The services that had failed when the shutdown began.
    pub failed: Vec<ServiceName>,
    /// Processes killed outside their service's process group.
    pub strays: usize,
    /// As a container's first process: other processes still running in it once the
    /// services had stopped, ended.
    pub rest: usize,
    /// `up` was refused before anything started (this host's name is taken in its
    /// cluster): why.
    pub refused: Option<String>,
}

/// A prepared daemon: locked, bound, not booted yet.
#[derive(Debug)]
pub struct Daemon {
    supervisor: Arc<Supervisor>,
    only: Vec<ServiceName>,
    socket: PathBuf,
    listener: UnixListener,
    tcp: Option<(TcpListener, api::auth::Tokens)>,
    proxies: Vec<(ServiceName, TcpListener)>,
    router: Option<TcpListener>,
    /// Services that clients start (on demand, behind a proxy, stopped when idle) give
    /// an idle graph work to wait for.
    on_demand: bool,
    systemd: bool,
    _lock: StateLock,
    _config_lock: StateLock,
}

impl Daemon {
    /// Takes the locks, binds every listener and creates the supervisor (every service
    /// stopped). Must run inside a tokio runtime.
    pub async fn prepare(spec: Spec, options: Options) -> Result<Self, DaemonError> {
        let state_dir = spec.settings.state_dir.clone();
        let file = spec.path.clone();
        let held = |error| match error {
            error @ LockError::Held { .. } => DaemonError::AlreadyRunning {
                error,
                file: file.clone(),
            },
            error => DaemonError::Lock(error),
        };
        // One supervisor per state directory, for the whole life of this one; and one
        // per config file, wherever its state directory is: an edited `state-dir` must
        // not let a second `up` run every service twice.
        let lock = StateLock::acquire(&state_dir).map_err(held)?;
        let config_lock = StateLock::acquire_for_config(&file, &state_dir).map_err(held)?;
        let tcp = match &spec.settings.api {
            None => None,
            Some(settings) => {
                let tokens = api::auth::Tokens::load(
                    settings.token_file.as_deref(),
                    settings.read_token_file.as_deref(),
                )
                .map_err(|error| DaemonError::Tokens(error.to_string()))?;
                let listener = TcpListener::bind(settings.listen).await.map_err(|error| {
                    DaemonError::Listen {
                        what: format!("{} (settings.api.listen)", settings.listen),
                        error: error.to_string(),
                    }
                })?;
                Some((listener, tokens))
            }
        };
        let proxies = crate::proxy::bind(&spec)
            .await
            .map_err(|error| DaemonError::Listen {
                what: "a proxy".to_owned(),
                error,
            })?;
        let router = crate::router::bind(&spec)
            .await
            .map_err(|error| DaemonError::Listen {
                what: "the router".to_owned(),
                error,
            })?;
        // The socket last, once the other listeners are there: it existing means they
        // all accept connections.
        let socket = api::socket_path(&state_dir);
        let listener = api::bind(&socket).map_err(|error| DaemonError::Listen {
            what: socket.display().to_string(),
            error: error.to_string(),
        })?;
        let on_demand = spec
            .services
            .values()
            .any(|s| !s.autostart || s.proxy.is_some() || s.idle_stop.is_some())
            || spec.router.is_some();
        let file_state_dir = options.file_state_dir.unwrap_or_else(|| state_dir.clone());
        let supervisor = match Supervisor::with_file_state_dir(spec, file_state_dir) {
            Ok(supervisor) => Arc::new(supervisor),
            Err(error) => {
                let _ = std::fs::remove_file(&socket);
                return Err(error.into());
            }
        };
        Ok(Self {
            supervisor,
            only: options.only,
            socket,
            listener,
            tcp,
            proxies,
            router,
            on_demand,
            systemd: options.systemd,
            _lock: lock,
            _config_lock: config_lock,
        })
    }

    pub fn supervisor(&self) -> Arc<Supervisor> {
        Arc::clone(&self.supervisor)
    }

    /// Recovers, boots, serves, and shuts down when `shutdown` resolves (with the
    /// reason to give), a client asks, or nothing is left to supervise.
    pub async fn run(self, shutdown: impl Future<Output = String>) -> Outcome {
        let Self {
            supervisor,
            only,
            socket,
            listener,
            tcp,
            proxies,
            router,
            on_demand,
            systemd,
            _lock,
            _config_lock,
        } = self;
        // From the start: recovering what an earlier supervisor left may take a while,
        // and systemd's watchdog runs meanwhile.
        let (told, pings) = if systemd {
            tell_systemd(&supervisor)
        } else {
            (None, None)
        };
        let mut graph = supervisor.watch_graph();
        // The API is served for the whole run, from before the first spawn (`status` is
        // most wanted while a large graph boots) until the history is closed.
        let served = {
            let supervisor = Arc::clone(&supervisor);
            let mut graph = graph.clone();
            async move {
                let unix = api::serve::serve(listener, api::router(Arc::clone(&supervisor)));
                let tcp = async {
                    match tcp {
                        Some((listener, tokens)) => {
                            let router = api::router_with_tokens(supervisor, tokens);
                            api::serve::serve(listener, router).await;
                        }
                        None => std::future::pending().await,
                    }
                };
                let done = graph.wait_for(|g| g.lifecycle == Lifecycle::Done);
                tokio::select! {
                    () = unix => {}
                    () = tcp => {}
                    _ = done => {}
                }
            }
        };
        let server = tokio::spawn(served);
        // Nothing starts before what an earlier supervisor left running has stopped.
        let recovery = supervisor.recover().await;
        for leftover in &recovery.leftovers {
            crate::supervisor::warn(format_args!(
                "pid {} (run {} of `{}`) did not stop on SIGKILL; its ports stay taken",
                leftover.pid, leftover.run_id, leftover.service
            ));
        }
        // Before the boot: a host whose name another live muster holds starts nothing.
        if let Err(why) = crate::cluster::start(Arc::clone(&supervisor), &supervisor.spec()).await {
            crate::supervisor::warn(format_args!("{why}"));
            let strays = supervisor.shutdown_because(why.clone()).await;
            let _ = server.await;
            let _ = std::fs::remove_file(&socket);
            return Outcome {
                ended_by: None,
                failed: Vec::new(),
                strays,
                rest: 0,
                refused: Some(why),
            };
        }
        supervisor.boot(&only).await;
        tokio::spawn(crate::proxy::manage(Arc::clone(&supervisor), proxies));
        tokio::spawn(crate::router::manage(Arc::clone(&supervisor), router));
        // Until a signal, a client's shutdown, or an idle graph that nobody controls.
        let mut events = supervisor.bus().feed();
        let idle = |supervisor: &Supervisor| {
            !on_demand && !supervisor.controlled() && supervisor.booted() && supervisor.idle()
        };
        tokio::pin!(shutdown);
        let ended_by = loop {
            if supervisor.lifecycle() != Lifecycle::Running
                && supervisor.lifecycle() != Lifecycle::Booting
            {
                break supervisor
                    .graph()
                    .why_shutdown
                    .as_deref()
                    .map(str::to_owned);
            }
            if idle(&supervisor) {
                break None;
            }
            tokio::select! {
                why = &mut shutdown => break Some(why),
                _ = graph.changed() => {}
                event = events.recv() => if event.is_none() { break None },
            }
        };
        let failed = supervisor
            .services()
            .into_iter()
            .filter(|handle| handle.status().phase == Phase::Failed)
            .map(|handle| handle.name().clone())
            .collect();
        let why = ended_by.clone().unwrap_or_else(|| NOTHING_LEFT.to_owned());
        let strays = supervisor.shutdown_because(why).await;
        let rest = crate::supervisor::process::end_the_rest(REST_GRACE).await;
        let _ = server.await;
        let _ = std::fs::remove_file(&socket);
        // `STOPPING=1` is out before the process ends.
        if let Some(told) = told {
            let _ = told.await;
        }
        if let Some(pings) = pings {
            pings.abort();
        }
        Outcome {
            ended_by,
            failed,
            strays,
            rest,
            refused: None,
        }
    }
}

/// How long, as a container's first process, what else still runs after the services
/// gets between SIGTERM and SIGKILL.
const REST_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Starts telling systemd (when `NOTIFY_SOCKET` is set): the task that reports the
/// supervisor's state, and the one that pings the watchdog (when `WATCHDOG_USEC` asks
/// for it). What is wrong with the variables is said on stderr.
fn tell_systemd(
    supervisor: &Arc<Supervisor>,
) -> (
    Option<tokio::task::JoinHandle<()>>,
    Option<tokio::task::JoinHandle<()>>,
) {
    let watchdog = crate::starter::watchdog_from_env();
    let starter = match crate::starter::Starter::from_env() {
        Some(Ok(starter)) => Arc::new(starter),
        Some(Err(why)) => {
            crate::supervisor::warn(why);
            return (None, None);
        }
        None => {
            if watchdog.is_some() {
                crate::supervisor::warn(
                    "WATCHDOG_USEC is set but NOTIFY_SOCKET is not: there is nowhere to send \
                     watchdog pings",
                );
            }
            return (None, None);
        }
    };
    let told = tokio::spawn(crate::starter::tell_systemd(
        Arc::clone(supervisor),
        Arc::clone(&starter),
    ));
    let pings = watchdog.map(|every| {
        tokio::spawn(crate::starter::ping_watchdog(
            Arc::clone(supervisor),
            starter,
            every,
        ))
    });
    (Some(told), pings)
}

/// Why a supervisor ends by itself: every service completed, failed or stopped, none is
/// on demand, and no client has used the API.
pub const NOTHING_LEFT: &str = "nothing left to supervise";

/// A datagram socket with a fresh abstract name for a background supervisor to say
/// `READY=1` on, and that name as `NOTIFY_SOCKET` spells it.
pub fn readiness_socket() -> std::io::Result<(tokio::net::UnixDatagram, String)> {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("muster-up-{}-{}", std::process::id(), fastrand::u64(..));
    let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
    let socket = std::os::unix::net::UnixDatagram::bind_addr(&address)?;
    socket.set_nonblocking(true)?;
    Ok((
        tokio::net::UnixDatagram::from_std(socket)?,
        format!("@{name}"),
    ))
}

/// The whole daemon in one call, for programs that embed it: [`Daemon::prepare`], then
/// [`Daemon::run`] until `shutdown` resolves (with the reason to give), a client asks,
/// or nothing is left to supervise.
pub async fn run(
    spec: Spec,
    options: Options,
    shutdown: impl Future<Output = String>,
) -> Result<Outcome, DaemonError> {
    Ok(Daemon::prepare(spec, options).await?.run(shutdown).await)
}
