//! The spawner: one thread with a descriptor table of its own, from which every child
//! of the supervisor is spawned.
//!
//! A spawn costs the kernel time in proportion to the descriptors the spawning thread's
//! table holds: `fork` (or `posix_spawn`'s `clone`) copies the table, and `exec` then
//! closes every descriptor marked close-on-exec one by one. A supervisor of 10,000
//! services holds more than 10,000 (the pipes it reads their output from), so each spawn
//! would cost O(services) and a boot O(services²). The spawner thread leaves the shared
//! table (`unshare(CLONE_FILES)`) as soon as it starts and closes everything in its copy
//! but stdin, stdout, stderr and its end of a socket pair: its spawns copy a handful of
//! descriptors whatever the supervisor holds.
//!
//! A descriptor number means nothing across the two tables, so what a child is given
//! from the supervisor's table (a pipe's write end, a log file, a cgroup's `procs` file)
//! travels to the spawner's table with `SCM_RIGHTS` over the socket pair, and what the
//! spawn makes for the supervisor (the read ends of the output pipes) travels back. The
//! child is the process's child as any other (the spawner is one of its threads), so the
//! reaper, `/proc/self/task/*/children` and the subreaper see no difference.
//!
//! The spawner blocks every signal: a handler run on its thread would write to a
//! descriptor number of the shared table (tokio's signal pipe) that means something
//! else, or nothing, in its own. std empties the mask of every child it spawns.
//!
//! Where the thread cannot be set up (a kernel or a sandbox that refuses `unshare`), a
//! spawn runs on the calling thread, as it would without a spawner.

use std::any::Any;
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock, PoisonError};

use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg,
    sendmsg, socketpair,
};

/// At most this many descriptors travel with one job, either way.
const MOST_DESCRIPTORS: usize = 32;

/// What runs on the spawner's thread: given the descriptors sent with it (now in the
/// spawner's table), it returns its result and the descriptors to send back.
type Job = Box<dyn FnOnce(Vec<OwnedFd>) -> (Box<dyn Any + Send>, Vec<OwnedFd>) + Send>;

/// The supervisor's side of the spawner.
struct Spawner {
    link: Mutex<Link>,
}

struct Link {
    /// The supervisor's end of the socket pair.
    socket: OwnedFd,
    jobs: mpsc::Sender<Job>,
    /// Each job's result, and whether its descriptors were sent back.
    done: mpsc::Receiver<(Box<dyn Any + Send>, bool)>,
}

/// The process's spawner, started at the first spawn; `None` where it cannot run.
static SPAWNER: OnceLock<Option<Spawner>> = OnceLock::new();

/// Runs `job` on the spawner's thread with `give` moved into its descriptor table, and
/// returns its result with the descriptors it hands back moved into the caller's. Jobs
/// run one at a time. Without a spawner, `job` runs here.
pub fn run<T: Send + 'static>(
    give: Vec<OwnedFd>,
    job: impl FnOnce(Vec<OwnedFd>) -> (T, Vec<OwnedFd>) + Send + 'static,
) -> io::Result<(T, Vec<OwnedFd>)> {
    let Some(spawner) = SPAWNER.get_or_init(Spawner::start) else {
        return Ok(job(give));
    };
    spawner.run(give, job)
}

/// Whether spawns leave the caller's descriptor table behind (for the tests).
pub fn is_separate() -> bool {
    SPAWNER.get_or_init(Spawner::start).is_some()
}

impl Spawner {
    fn start() -> Option<Spawner> {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .ok()?;
        let (jobs, incoming) = mpsc::channel::<Job>();
        let (finished, done) = mpsc::channel();
        let (ready, started) = mpsc::channel();
        let end = theirs.as_raw_fd();
        std::thread::Builder::new()
            .name("muster-spawner".to_owned())
            .spawn(move || {
                let socket = match leave_shared_table(end) {
                    Ok(socket) => socket,
                    Err(error) => {
                        crate::supervisor::say::warn(format_args!(
                            "children are spawned from the supervisor's own descriptor table \
                             ({error}): each spawn costs more the more services run"
                        ));
                        let _ = ready.send(false);
                        return;
                    }
                };
                let _ = ready.send(true);
                for job in incoming {
                    let given = receive(&socket).unwrap_or_default();
                    let (value, back) = job(given);
                    let sent = send(&socket, &back).is_ok();
                    if finished.send((value, sent)).is_err() {
                        break;
                    }
                }
            })
            .ok()?;
        // Once the thread has its own table, the shared one no longer needs its end
        // (and on a failure the thread has returned without touching it).
        let separate = started.recv().unwrap_or(false);
        drop(theirs);
        separate.then(|| Spawner {
            link: Mutex::new(Link {
                socket: ours,
                jobs,
                done,
            }),
        })
    }

    fn run<T: Send + 'static>(
        &self,
        give: Vec<OwnedFd>,
        job: impl FnOnce(Vec<OwnedFd>) -> (T, Vec<OwnedFd>) + Send + 'static,
    ) -> io::Result<(T, Vec<OwnedFd>)> {
        let link = self.link.lock().unwrap_or_else(PoisonError::into_inner);
        send(&link.socket, &give)?;
        drop(give);
        let boxed: Job = Box::new(move |given| {
            let (value, back) = job(given);
            (Box::new(value) as Box<dyn Any + Send>, back)
        });
        let gone = || io::Error::other("muster's spawner thread has stopped");
        link.jobs.send(boxed).map_err(|_| gone())?;
        let (value, sent) = link.done.recv().map_err(|_| gone())?;
        let back = if sent {
            receive(&link.socket)?
        } else {
            return Err(io::Error::other(
                "cannot pass the new process's descriptors back from muster's spawner",
            ));
        };
        let value = value
            .downcast::<T>()
            .map_err(|_| io::Error::other("muster's spawner answered another job"))?;
        Ok((*value, back))
    }
}

/// On the spawner's thread: blocks every signal, takes a private copy of the descriptor
/// table and closes all of it but the standard streams and `end`.
#[allow(unsafe_code)]
fn leave_shared_table(end: RawFd) -> io::Result<OwnedFd> {
    use nix::sys::signal::{SigSet, SigmaskHow, pthread_sigmask};
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&SigSet::all()), None)?;
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_FILES)?;
    // Everything above stderr but `end`: the ranges on each side of it.
    let end_number = u32::try_from(end).map_err(|_| io::Error::other("a negative descriptor"))?;
    for (first, last) in [
        (3, end_number.saturating_sub(1)),
        (end_number.saturating_add(1), u32::MAX),
    ] {
        if first > last {
            continue;
        }
        // SAFETY: this thread's table is its own now; nothing in it but `end` and the
        // standard streams is used on this thread.
        if unsafe { nix::libc::close_range(first, last, 0) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    // SAFETY: `end` is open in this thread's table and owned by nothing else in it.
    Ok(unsafe { OwnedFd::from_raw_fd(end) })
}

/// Sends `fds` over `socket` in one message (a byte, and the descriptors as rights).
fn send(socket: &OwnedFd, fds: &[OwnedFd]) -> io::Result<()> {
    if fds.len() > MOST_DESCRIPTORS {
        return Err(io::Error::other("too many descriptors for one spawn"));
    }
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let rights = [ControlMessage::ScmRights(&raw)];
    let control: &[ControlMessage] = if raw.is_empty() { &[] } else { &rights };
    loop {
        match sendmsg::<()>(
            socket.as_raw_fd(),
            &[IoSlice::new(&[0])],
            control,
            MsgFlags::empty(),
            None,
        ) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => return other.map(drop).map_err(io::Error::from),
        }
    }
}

/// Receives one message of [`send`]: its descriptors, close-on-exec in this table.
#[allow(unsafe_code)]
fn receive(socket: &OwnedFd) -> io::Result<Vec<OwnedFd>> {
    let mut byte = [0u8; 1];
    let mut control = nix::cmsg_space!([RawFd; MOST_DESCRIPTORS]);
    loop {
        let mut data = [IoSliceMut::new(&mut byte)];
        let message = match recvmsg::<()>(
            socket.as_raw_fd(),
            &mut data,
            Some(&mut control),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => other.map_err(io::Error::from)?,
        };
        let mut fds = Vec::new();
        for cmsg in message.cmsgs().map_err(io::Error::from)? {
            if let ControlMessageOwned::ScmRights(raw) = cmsg {
                // SAFETY: the kernel installed these descriptors in this table for
                // this message; nothing else owns them.
                fds.extend(
                    raw.into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
        if message.bytes == 0 {
            return Err(io::Error::other("muster's spawner closed its socket"));
        }
        return Ok(fds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// The descriptors open in the calling thread's table.
    fn open_here() -> usize {
        std::fs::read_dir("/proc/thread-self/fd").unwrap().count()
    }

    #[test]
    fn descriptors_travel_both_ways_and_the_spawner_holds_few() {
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        // Many descriptors held here: none of them is copied into the spawner's table.
        let held: Vec<OwnedFd> = (0..200).map(|_| write.try_clone().unwrap()).collect();
        let ((count, echoed), back) = run(vec![write], |given| {
            let mut file = std::fs::File::from(given.into_iter().next().unwrap());
            file.write_all(b"through the spawner").unwrap();
            let (again, mine) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
            let mut mine = std::fs::File::from(mine);
            mine.write_all(b"back").unwrap();
            ((open_here(), true), vec![again])
        })
        .unwrap();
        assert!(is_separate(), "unshare(CLONE_FILES) works on this kernel");
        assert!(echoed);
        assert!(count < 16, "the spawner's table holds {count} descriptors");
        drop(held);
        let mut text = String::new();
        std::fs::File::from(read).read_to_string(&mut text).unwrap();
        assert_eq!(text, "through the spawner");
        let mut back_text = String::new();
        std::fs::File::from(back.into_iter().next().unwrap())
            .read_to_string(&mut back_text)
            .unwrap();
        assert_eq!(back_text, "back");
    }
}
