//! The io_uring forwarder: one ring per thread, on which a multishot accept takes clients, a
//! multishot receive per socket fills buffers the thread has provided to the kernel, and each
//! filled buffer is sent to the other socket of its connection and then provided again. One
//! send is in flight per direction, so bytes leave in the order they came; the submissions a
//! turn of the loop makes go to the kernel in one `io_uring_enter`, which also waits for the
//! next completions.
//!
//! What it must not do: hold a connection's sockets past its end. A side's end of stream is
//! passed on as a half-close once what it sent before has been sent; a connection ends when
//! both directions have ended, or at once when either side fails: both sockets are then shut
//! down (which ends their multishot receives) and closed, and the buffers it held are provided
//! again.

use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, RawFd};

use io_uring::{cqueue, opcode, squeue, types, IoUring};

/// Bytes of one provided buffer: what one receive completion can carry.
const BUF_SIZE: usize = 4096;
/// Buffers provided per thread.
const BUFS: u16 = 4096;
/// The buffer group the receives select from.
const GROUP: u16 = 1;
/// Entries of the submission queue (the completion queue has twice as many).
const RING_ENTRIES: u32 = 4096;
/// Buffers one direction of a connection may hold before its receive is cancelled, until its
/// sends have taken it below half of that: without a bound, a direction whose peer does not
/// read could take every buffer, and the other direction, which that peer waits on, none.
const MAX_HELD: usize = 16;

/// What a completion answers, with the connection (`slot`), the direction (0: client to
/// upstream, 1: back) and the buffer it concerns, packed into the entry's user data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Accept,
    Recv { slot: u32, dir: usize },
    Send { slot: u32, dir: usize, bid: u16 },
    Provide,
    Cancel,
}

impl Op {
    fn pack(self) -> u64 {
        let (kind, slot, dir, bid) = match self {
            Op::Accept => (0u64, 0, 0, 0),
            Op::Recv { slot, dir } => (1, slot, dir, 0),
            Op::Send { slot, dir, bid } => (2, slot, dir, bid),
            Op::Provide => (3, 0, 0, 0),
            Op::Cancel => (4, 0, 0, 0),
        };
        kind << 56 | (dir as u64) << 48 | u64::from(bid) << 32 | u64::from(slot)
    }

    fn unpack(data: u64) -> Op {
        let (slot, dir, bid) = (
            data as u32,
            (data >> 48 & 0xff) as usize,
            (data >> 32) as u16,
        );
        match data >> 56 {
            0 => Op::Accept,
            1 => Op::Recv { slot, dir },
            2 => Op::Send { slot, dir, bid },
            3 => Op::Provide,
            _ => Op::Cancel,
        }
    }
}

/// Buffers received in one direction and not yet sent whole, in order.
#[derive(Default)]
struct Outgoing {
    /// Buffer id and length of each.
    queue: VecDeque<(u16, u32)>,
    /// Bytes of the front one sent so far.
    sent: u32,
    /// A send of the front one is in flight.
    busy: bool,
    /// The reading side ended its stream.
    eof: bool,
    /// That end was passed on: the writing side is shut down for writes.
    finished: bool,
    /// A multishot receive is in place for the reading side.
    armed: bool,
    /// Its receive was cancelled for holding [`MAX_HELD`] buffers.
    paused: bool,
}

/// A client and its upstream connection: `fds[dir]` is the socket direction `dir` reads.
struct Connection {
    fds: [RawFd; 2],
    out: [Outgoing; 2],
    open: bool,
}

/// The provided buffers: one allocation the kernel fills by buffer id.
struct Buffers(Vec<u8>);

impl Buffers {
    fn ptr(&mut self, bid: u16, offset: u32) -> *mut u8 {
        let at = usize::from(bid) * BUF_SIZE + offset as usize;
        self.0[at..].as_mut_ptr()
    }

    /// The entry that provides buffer `bid` again.
    fn provide(&mut self, bid: u16) -> squeue::Entry {
        opcode::ProvideBuffers::new(self.ptr(bid, 0), BUF_SIZE as i32, 1, GROUP, bid)
            .build()
            .user_data(Op::Provide.pack())
    }
}

/// A listener on `addr` that other threads' listeners may share (`SO_REUSEPORT`).
pub(crate) fn reuse_port_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let domain = match addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    // SAFETY: a plain socket(2) call; the descriptor is owned by the listener made below.
    let fd = unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a socket just made and owned by nothing else.
    let listener = unsafe { TcpListener::from_raw_fd(fd) };
    for option in [libc::SO_REUSEADDR, libc::SO_REUSEPORT] {
        set_int_option(fd, libc::SOL_SOCKET, option)?;
    }
    let (storage, len) = sockaddr(addr);
    // SAFETY: `storage` holds a socket address of `len` bytes.
    if unsafe { libc::bind(fd, (&raw const storage).cast(), len) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: listen(2) on the socket just bound.
    if unsafe { libc::listen(fd, 4096) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(listener)
}

fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all zeroes is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*v4.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in and suitably aligned.
            unsafe { std::ptr::write((&raw mut storage).cast(), sin) };
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: v6.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: v6.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in6 and suitably aligned.
            unsafe { std::ptr::write((&raw mut storage).cast(), sin6) };
            size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

fn set_int_option(fd: RawFd, level: libc::c_int, option: libc::c_int) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: the option's value is a c_int that outlives the call.
    let done = unsafe {
        libc::setsockopt(
            fd,
            level,
            option,
            (&raw const one).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    match done {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// Forwards every connection `listener` accepts to `upstream`, on an io_uring of its own.
pub(crate) fn run(listener: TcpListener, upstream: SocketAddr) -> anyhow::Result<()> {
    let mut ring: IoUring = IoUring::builder()
        .setup_single_issuer()
        .setup_coop_taskrun()
        .build(RING_ENTRIES)?;
    let mut buffers = Buffers(vec![0; BUF_SIZE * usize::from(BUFS)]);
    let mut connections: Vec<Connection> = Vec::new();
    let mut submissions = vec![
        opcode::ProvideBuffers::new(buffers.ptr(0, 0), BUF_SIZE as i32, BUFS, GROUP, 0)
            .build()
            .user_data(Op::Provide.pack()),
        accept(&listener),
    ];
    let mut completions = Vec::new();
    let mut starved: Vec<(u32, usize)> = Vec::new();
    let mut provided = false;
    loop {
        for entry in submissions.drain(..) {
            // SAFETY: every entry names buffers in `buffers` and descriptors that stay open
            // until their operations have completed (a connection's are shut down first).
            while unsafe { ring.submission().push(&entry) }.is_err() {
                ring.submit()?;
            }
        }
        ring.submit_and_wait(1)?;
        completions.extend(
            ring.completion()
                .map(|c| (Op::unpack(c.user_data()), c.result(), c.flags())),
        );
        for (op, result, flags) in completions.drain(..) {
            match op {
                Op::Accept => {
                    if result >= 0 {
                        // SAFETY: the completion hands over the accepted socket.
                        let client = unsafe { TcpStream::from_raw_fd(result) };
                        if let Some(connection) = connect(client, upstream) {
                            let slot = connections.len() as u32;
                            connections.push(connection);
                            for dir in 0..2 {
                                rearm(&mut connections[slot as usize], slot, dir, &mut submissions);
                            }
                        }
                    }
                    if !cqueue::more(flags) {
                        submissions.push(accept(&listener));
                    }
                }
                Op::Recv { slot, dir } => {
                    let connection = &mut connections[slot as usize];
                    let more = cqueue::more(flags);
                    if !more {
                        connection.out[dir].armed = false;
                    }
                    match cqueue::buffer_select(flags) {
                        Some(bid) if result > 0 && connection.open => {
                            let out = &mut connection.out[dir];
                            out.queue.push_back((bid, result as u32));
                            if out.queue.len() >= MAX_HELD && out.armed && !out.paused {
                                out.paused = true;
                                submissions.push(cancel(slot, dir));
                            }
                            send_next(connection, slot, dir, &mut buffers, &mut submissions);
                        }
                        Some(bid) => {
                            submissions.push(buffers.provide(bid));
                            provided = true;
                        }
                        None => {}
                    }
                    if result == 0 && connection.open {
                        connection.out[dir].eof = true;
                        finish_if_drained(connection, dir, &mut buffers, &mut submissions);
                    } else if result == -libc::ENOBUFS {
                        starved.push((slot, dir));
                    } else if result < 0 && result != -libc::ECANCELED {
                        close(connection, &mut buffers, &mut submissions);
                    } else if !more {
                        rearm(connection, slot, dir, &mut submissions);
                    }
                }
                Op::Send { slot, dir, bid } => {
                    let connection = &mut connections[slot as usize];
                    if result < 0 || !connection.open {
                        submissions.push(buffers.provide(bid));
                        provided = true;
                        close(connection, &mut buffers, &mut submissions);
                        continue;
                    }
                    let out = &mut connection.out[dir];
                    out.busy = false;
                    out.sent += result as u32;
                    if out.queue.front().is_some_and(|&(_, len)| out.sent >= len) {
                        out.queue.pop_front();
                        out.sent = 0;
                        submissions.push(buffers.provide(bid));
                        provided = true;
                        if out.paused && out.queue.len() <= MAX_HELD / 2 {
                            out.paused = false;
                            rearm(connection, slot, dir, &mut submissions);
                        }
                    }
                    send_next(connection, slot, dir, &mut buffers, &mut submissions);
                    finish_if_drained(connection, dir, &mut buffers, &mut submissions);
                }
                Op::Provide => {
                    anyhow::ensure!(result >= 0, "providing buffers failed: {result}");
                }
                Op::Cancel => {}
            }
        }
        // Receives that found no buffer wait for one to be provided again.
        if provided {
            provided = false;
            for (slot, dir) in starved.drain(..) {
                rearm(&mut connections[slot as usize], slot, dir, &mut submissions);
            }
        }
    }
}

fn accept(listener: &TcpListener) -> squeue::Entry {
    opcode::AcceptMulti::new(types::Fd(listener.as_raw_fd()))
        .build()
        .user_data(Op::Accept.pack())
}

/// Puts a multishot receive in place for direction `dir`, unless one is, the direction is
/// paused or ended, or the connection is closed.
fn rearm(connection: &mut Connection, slot: u32, dir: usize, submissions: &mut Vec<squeue::Entry>) {
    let out = &mut connection.out[dir];
    if !connection.open || out.armed || out.paused || out.eof {
        return;
    }
    out.armed = true;
    submissions.push(
        opcode::RecvMulti::new(types::Fd(connection.fds[dir]), GROUP)
            .build()
            .user_data(Op::Recv { slot, dir }.pack()),
    );
}

/// Cancels the multishot receive of direction `dir`.
fn cancel(slot: u32, dir: usize) -> squeue::Entry {
    opcode::AsyncCancel::new(Op::Recv { slot, dir }.pack())
        .build()
        .user_data(Op::Cancel.pack())
}

/// Connects `client` to `upstream`; `None` (the client dropped) when that fails.
fn connect(client: TcpStream, upstream: SocketAddr) -> Option<Connection> {
    let server = TcpStream::connect(upstream).ok()?;
    client.set_nodelay(true).ok()?;
    server.set_nodelay(true).ok()?;
    Some(Connection {
        fds: [client.into_raw_fd(), server.into_raw_fd()],
        out: Default::default(),
        open: true,
    })
}

/// Sends the rest of the front buffer of direction `dir`, unless a send is in flight.
fn send_next(
    connection: &mut Connection,
    slot: u32,
    dir: usize,
    buffers: &mut Buffers,
    submissions: &mut Vec<squeue::Entry>,
) {
    let out = &mut connection.out[dir];
    let Some(&(bid, len)) = out.queue.front() else {
        return;
    };
    if out.busy {
        return;
    }
    out.busy = true;
    let to = connection.fds[1 - dir];
    submissions.push(
        opcode::Send::new(types::Fd(to), buffers.ptr(bid, out.sent), len - out.sent)
            .build()
            .user_data(Op::Send { slot, dir, bid }.pack()),
    );
}

/// Passes on the end of direction `dir`'s stream once all it received has been sent, and ends
/// the connection once both directions have ended.
fn finish_if_drained(
    connection: &mut Connection,
    dir: usize,
    buffers: &mut Buffers,
    submissions: &mut Vec<squeue::Entry>,
) {
    let out = &mut connection.out[dir];
    if !connection.open || !out.eof || out.finished || out.busy || !out.queue.is_empty() {
        return;
    }
    out.finished = true;
    // SAFETY: shutdown(2) on a socket the connection owns and has not closed.
    unsafe { libc::shutdown(connection.fds[1 - dir], libc::SHUT_WR) };
    if connection.out.iter().all(|out| out.finished) {
        close(connection, buffers, submissions);
    }
}

/// Ends `connection`: shuts both sockets down (ending their receives), closes them, and
/// provides again the buffers it held that no send is using.
fn close(connection: &mut Connection, buffers: &mut Buffers, submissions: &mut Vec<squeue::Entry>) {
    if !connection.open {
        return;
    }
    connection.open = false;
    for fd in connection.fds {
        // SAFETY: the connection owns both descriptors and closes each once, here.
        unsafe {
            libc::shutdown(fd, libc::SHUT_RDWR);
            libc::close(fd);
        }
    }
    for out in &mut connection.out {
        // A buffer with a send in flight is provided again when that send completes.
        let skip = usize::from(out.busy);
        for (bid, _) in out.queue.drain(..).skip(skip) {
            submissions.push(buffers.provide(bid));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::thread;

    use super::*;

    #[test]
    fn user_data_round_trips() {
        for op in [
            Op::Accept,
            Op::Provide,
            Op::Recv { slot: 7, dir: 1 },
            Op::Send {
                slot: u32::MAX,
                dir: 1,
                bid: BUFS - 1,
            },
        ] {
            assert_eq!(Op::unpack(op.pack()), op);
        }
    }

    /// An echo server on a free port: it writes back what each connection sends.
    fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let mut stream = stream.unwrap();
                thread::spawn(move || {
                    let mut buf = [0; 65536];
                    loop {
                        match stream.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => stream.write_all(&buf[..n]).unwrap(),
                        }
                    }
                });
            }
        });
        addr
    }

    #[test]
    fn bytes_cross_in_order_both_ways_and_connections_end() {
        let upstream = echo_server();
        let listener = reuse_port_listener("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        thread::spawn(move || run(listener, upstream));
        // More bytes than the provided buffers hold at once, so buffers are provided again,
        // and sends that the kernel takes in parts.
        let message: Vec<u8> = (0..BUF_SIZE * usize::from(BUFS) + 1)
            .map(|i| (i % 251) as u8)
            .collect();
        for _ in 0..3 {
            let mut client = TcpStream::connect(addr).unwrap();
            let mut reader = client.try_clone().unwrap();
            let expected = message.clone();
            let read = thread::spawn(move || {
                let mut back = vec![0; expected.len()];
                reader.read_exact(&mut back).unwrap();
                assert!(back == expected, "the echo differs");
                let mut rest = Vec::new();
                reader.read_to_end(&mut rest).unwrap();
                assert!(rest.is_empty());
            });
            client.write_all(&message).unwrap();
            client.shutdown(std::net::Shutdown::Write).unwrap();
            read.join().unwrap();
        }
    }
}
