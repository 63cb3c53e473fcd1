//! The io_uring forwarder: one ring per thread, on which a multishot accept takes clients, a
//! multishot receive per socket fills buffers the thread has provided to the kernel through a
//! buffer ring, and the filled buffers are sent to the other socket of their connection and
//! then provided again (a store to the ring's memory, no operation).
//! One send is in flight per direction, so bytes leave in the order they came; it gathers every
//! buffer the direction holds (a `sendmsg` over their vector), so the messages that arrive while
//! it is in flight leave together in the next. A send the kernel takes only in part is followed
//! by the rest before anything later. The submissions a turn of the loop makes, the sends last
//! so that they gather all that turn's receives, go to the kernel in one `io_uring_enter`,
//! which also waits for the next completions.
//!
//! What it must not do: hold a connection's sockets past its end. A side's end of stream is
//! passed on as a half-close once what it sent before has been sent; a connection ends when
//! both directions have ended, or at once when either side fails: both sockets are then shut
//! down (which ends their multishot receives) and closed, and the buffers it held are provided
//! again.

use std::alloc::{alloc_zeroed, dealloc, handle_alloc_error, Layout};
use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
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

/// What a completion answers, with the connection (`slot`) and the direction (0: client to
/// upstream, 1: back) it concerns, packed into the entry's user data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Accept,
    Recv { slot: u32, dir: usize },
    Send { slot: u32, dir: usize },
    Cancel,
}

impl Op {
    fn pack(self) -> u64 {
        let (kind, slot, dir) = match self {
            Op::Accept => (0u64, 0, 0),
            Op::Recv { slot, dir } => (1, slot, dir),
            Op::Send { slot, dir } => (2, slot, dir),
            Op::Cancel => (3, 0, 0),
        };
        kind << 56 | (dir as u64) << 48 | u64::from(slot)
    }

    fn unpack(data: u64) -> Op {
        let (slot, dir) = (data as u32, (data >> 48 & 0xff) as usize);
        match data >> 56 {
            0 => Op::Accept,
            1 => Op::Recv { slot, dir },
            2 => Op::Send { slot, dir },
            _ => Op::Cancel,
        }
    }
}

/// The message header and vector a direction's gathering send reads, boxed so that their
/// addresses hold while the table of connections grows.
struct SendVector {
    header: libc::msghdr,
    parts: [libc::iovec; MAX_HELD],
}

impl SendVector {
    fn new() -> Box<SendVector> {
        // SAFETY: all zeroes is a valid msghdr (no name, no control data) and iovec.
        Box::new(unsafe { std::mem::zeroed() })
    }
}

/// Buffers received in one direction and not yet sent whole, in order.
struct Outgoing {
    /// Buffer id and length of each.
    queue: VecDeque<(u16, u32)>,
    /// Bytes of the front one sent so far.
    sent: u32,
    /// Buffers at the front of the queue that the send in flight covers (0: none in flight).
    in_flight: usize,
    /// What the send in flight reads when it gathers more than one buffer.
    vector: Box<SendVector>,
    /// The reading side ended its stream.
    eof: bool,
    /// That end was passed on: the writing side is shut down for writes.
    finished: bool,
    /// A multishot receive is in place for the reading side.
    armed: bool,
    /// Its receive was cancelled for holding [`MAX_HELD`] buffers.
    paused: bool,
}

impl Outgoing {
    fn new() -> Outgoing {
        Outgoing {
            queue: VecDeque::new(),
            sent: 0,
            in_flight: 0,
            vector: SendVector::new(),
            eof: false,
            finished: false,
            armed: false,
            paused: false,
        }
    }

    /// Takes the `sent` bytes a send completed off the front of the queue, and hands over the
    /// buffers it sent whole, to be provided again; a buffer sent in part stays at the front
    /// with what is left of it.
    fn consume(&mut self, mut sent: u32, mut done: impl FnMut(u16)) {
        while let Some(&(bid, len)) = self.queue.front() {
            let rest = len - self.sent;
            if sent < rest {
                self.sent += sent;
                return;
            }
            sent -= rest;
            self.sent = 0;
            self.queue.pop_front();
            done(bid);
        }
    }
}

/// A client and its upstream connection: `fds[dir]` is the socket direction `dir` reads.
struct Connection {
    fds: [RawFd; 2],
    out: [Outgoing; 2],
    open: bool,
}

/// The provided buffers: one allocation the kernel fills by buffer id, and the ring of
/// [`BUFS`] entries through which they are handed to it, page-aligned as the kernel requires.
struct Buffers {
    data: Vec<u8>,
    ring: NonNull<BufRingEntry>,
    /// Entries written to the ring; the kernel sees them once [`Buffers::publish`] stores it.
    tail: u16,
    /// The tail the kernel sees.
    published: u16,
}

impl Buffers {
    fn ring_layout() -> Layout {
        Layout::from_size_align(usize::from(BUFS) * size_of::<BufRingEntry>(), 4096)
            .expect("the ring's layout is valid")
    }

    /// Every buffer, each in the ring, registered with `ring` as group [`GROUP`].
    fn register(ring: &IoUring) -> io::Result<Buffers> {
        // SAFETY: the layout has a non-zero size.
        let entries = unsafe { alloc_zeroed(Buffers::ring_layout()) };
        let Some(entries) = NonNull::new(entries.cast()) else {
            handle_alloc_error(Buffers::ring_layout());
        };
        let mut buffers = Buffers {
            data: vec![0; BUF_SIZE * usize::from(BUFS)],
            ring: entries,
            tail: 0,
            published: 0,
        };
        for bid in 0..BUFS {
            buffers.provide(bid);
        }
        buffers.publish();
        // SAFETY: the ring's memory stays allocated until `buffers` is dropped, which the caller
        // does after dropping `ring`.
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                entries.as_ptr() as u64,
                BUFS,
                GROUP,
                0,
            )?;
        }
        Ok(buffers)
    }

    fn ptr(&mut self, bid: u16, offset: u32) -> *mut u8 {
        let at = usize::from(bid) * BUF_SIZE + offset as usize;
        self.data[at..].as_mut_ptr()
    }

    /// Hands buffer `bid` back to the kernel, from the next [`Buffers::publish`] on.
    fn provide(&mut self, bid: u16) {
        let addr = self.ptr(bid, 0) as u64;
        // SAFETY: the index is below BUFS, the ring's length; the kernel reads only entries
        // between its head and the published tail, which this one is not yet.
        let entry = unsafe { &mut *self.ring.as_ptr().add(usize::from(self.tail & (BUFS - 1))) };
        entry.set_addr(addr);
        entry.set_len(BUF_SIZE as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Lets the kernel take the buffers provided since the last publish; whether there were any.
    fn publish(&mut self) -> bool {
        // SAFETY: the tail field is the first entry's reserved u16, which the kernel reads
        // atomically and never writes.
        let tail =
            unsafe { AtomicU16::from_ptr(BufRingEntry::tail(self.ring.as_ptr()).cast_mut()) };
        tail.store(self.tail, Ordering::Release);
        std::mem::replace(&mut self.published, self.tail) != self.tail
    }
}

impl Drop for Buffers {
    fn drop(&mut self) {
        // SAFETY: the ring was allocated with this layout, and the io_uring that read it is gone.
        unsafe { dealloc(self.ring.as_ptr().cast(), Buffers::ring_layout()) };
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
    // Declared before the ring, so dropped after it: the kernel reads the buffer ring until then.
    let mut buffers;
    let mut ring: IoUring = IoUring::builder()
        .setup_single_issuer()
        .setup_coop_taskrun()
        .build(RING_ENTRIES)?;
    buffers = Buffers::register(&ring)?;
    let mut connections: Vec<Connection> = Vec::new();
    let mut submissions = vec![accept(&listener)];
    let mut completions = Vec::new();
    let mut starved: Vec<(u32, usize)> = Vec::new();
    // Directions that received or finished a send this turn, to send from once it is over.
    let mut to_send: Vec<(u32, usize)> = Vec::new();
    loop {
        for entry in submissions.drain(..) {
            // SAFETY: every entry names buffers in `buffers`, send vectors of connections
            // (which are never dropped) and descriptors that stay open until their operations
            // have completed (a connection's are shut down first).
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
                            to_send.push((slot, dir));
                        }
                        Some(bid) => {
                            buffers.provide(bid);
                        }
                        None => {}
                    }
                    if result == 0 && connection.open {
                        connection.out[dir].eof = true;
                        finish_if_drained(connection, dir, &mut buffers);
                    } else if result == -libc::ENOBUFS {
                        starved.push((slot, dir));
                    } else if result < 0 && result != -libc::ECANCELED {
                        close(connection, &mut buffers);
                    } else if !more {
                        rearm(connection, slot, dir, &mut submissions);
                    }
                }
                Op::Send { slot, dir } => {
                    let connection = &mut connections[slot as usize];
                    let out = &mut connection.out[dir];
                    let covered = std::mem::take(&mut out.in_flight);
                    if !connection.open {
                        // Closing left the buffers this send covered for it to provide again.
                        for (bid, _) in out.queue.drain(..covered) {
                            buffers.provide(bid);
                        }
                        continue;
                    }
                    if result < 0 {
                        close(connection, &mut buffers);
                        continue;
                    }
                    out.consume(result as u32, |bid| buffers.provide(bid));
                    if out.paused && out.queue.len() <= MAX_HELD / 2 {
                        out.paused = false;
                        rearm(connection, slot, dir, &mut submissions);
                    }
                    to_send.push((slot, dir));
                    finish_if_drained(connection, dir, &mut buffers);
                }
                Op::Cancel => {}
            }
        }
        for (slot, dir) in to_send.drain(..) {
            send_next(
                &mut connections[slot as usize],
                slot,
                dir,
                &mut buffers,
                &mut submissions,
            );
        }
        // Receives that found no buffer wait for one to be provided again.
        if buffers.publish() {
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
        out: [Outgoing::new(), Outgoing::new()],
        open: true,
    })
}

/// Sends what direction `dir` holds, up to [`MAX_HELD`] buffers in one send (the rest of the
/// front one first), unless a send is in flight, nothing is held or the connection is closed.
fn send_next(
    connection: &mut Connection,
    slot: u32,
    dir: usize,
    buffers: &mut Buffers,
    submissions: &mut Vec<squeue::Entry>,
) {
    let out = &mut connection.out[dir];
    if !connection.open || out.in_flight > 0 || out.queue.is_empty() {
        return;
    }
    let to = types::Fd(connection.fds[1 - dir]);
    let user_data = Op::Send { slot, dir }.pack();
    out.in_flight = out.queue.len().min(MAX_HELD);
    if out.in_flight == 1 {
        let (bid, len) = out.queue[0];
        let send = opcode::Send::new(to, buffers.ptr(bid, out.sent), len - out.sent);
        submissions.push(send.build().user_data(user_data));
        return;
    }
    let vector = &mut *out.vector;
    let mut skip = out.sent;
    for (part, &(bid, len)) in vector.parts.iter_mut().zip(&out.queue) {
        part.iov_base = buffers.ptr(bid, skip).cast();
        part.iov_len = (len - skip) as usize;
        skip = 0;
    }
    vector.header.msg_iov = vector.parts.as_mut_ptr();
    vector.header.msg_iovlen = out.in_flight as _;
    let send = opcode::SendMsg::new(to, &raw const vector.header);
    submissions.push(send.build().user_data(user_data));
}

/// Passes on the end of direction `dir`'s stream once all it received has been sent, and ends
/// the connection once both directions have ended.
fn finish_if_drained(connection: &mut Connection, dir: usize, buffers: &mut Buffers) {
    let out = &mut connection.out[dir];
    if !connection.open || !out.eof || out.finished || out.in_flight > 0 || !out.queue.is_empty() {
        return;
    }
    out.finished = true;
    // SAFETY: shutdown(2) on a socket the connection owns and has not closed.
    unsafe { libc::shutdown(connection.fds[1 - dir], libc::SHUT_WR) };
    if connection.out.iter().all(|out| out.finished) {
        close(connection, buffers);
    }
}

/// Ends `connection`: shuts both sockets down (ending their receives), closes them, and
/// provides again the buffers it held that no send is using.
fn close(connection: &mut Connection, buffers: &mut Buffers) {
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
        // The buffers a send in flight covers are provided again when it completes.
        for (bid, _) in out.queue.drain(out.in_flight..) {
            buffers.provide(bid);
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
            Op::Cancel,
            Op::Recv { slot: 7, dir: 1 },
            Op::Send {
                slot: u32::MAX,
                dir: 1,
            },
        ] {
            assert_eq!(Op::unpack(op.pack()), op);
        }
    }

    #[test]
    fn a_send_taken_in_part_leaves_the_rest_at_the_front() {
        let mut out = Outgoing::new();
        out.queue.extend([(3, 100), (9, 50), (4, 10)]);
        let mut done = Vec::new();
        out.consume(40, |bid| done.push(bid));
        assert_eq!(
            (done.as_slice(), out.sent, out.queue.len()),
            (&[][..], 40, 3)
        );
        // The rest of the first, and part of the second.
        out.consume(60 + 49, |bid| done.push(bid));
        assert_eq!(
            (done.as_slice(), out.sent, out.queue.len()),
            (&[3][..], 49, 2)
        );
        out.consume(1 + 10, |bid| done.push(bid));
        assert_eq!(
            (done.as_slice(), out.sent, out.queue.len()),
            (&[3, 9, 4][..], 0, 0)
        );
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

    /// A socket with a receive buffer of `bytes`, set before it connects or listens so that
    /// the window it offers stays that small.
    fn small_receive_buffer_socket(bytes: libc::c_int) -> RawFd {
        // SAFETY: a plain socket(2) call; the caller owns the descriptor.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        assert!(fd >= 0, "socket: {}", io::Error::last_os_error());
        // SAFETY: the option's value is a c_int that outlives the call.
        let done = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&raw const bytes).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(done, 0, "SO_RCVBUF: {}", io::Error::last_os_error());
        fd
    }

    /// Reads `stream` to its end the way a slow peer does: nothing for a while, so that what is
    /// sent to it backs up until the sender's socket buffer is full and sends to it are taken in
    /// part, then small pieces with pauses; hands each piece to `piece`.
    fn read_slowly(stream: &mut TcpStream, mut piece: impl FnMut(&[u8])) {
        thread::sleep(std::time::Duration::from_millis(400));
        let mut buf = [0; 700];
        for reads in 0u64.. {
            match stream.read(&mut buf).unwrap() {
                0 => return,
                n => piece(&buf[..n]),
            }
            if reads % 8 == 0 {
                thread::sleep(std::time::Duration::from_millis(1));
            }
        }
    }

    /// An echo server on a free port that reads slowly ([`read_slowly`]) through a small
    /// receive buffer.
    fn slow_echo_server() -> SocketAddr {
        let fd = small_receive_buffer_socket(2048);
        let (storage, len) = sockaddr("127.0.0.1:0".parse().unwrap());
        // SAFETY: `storage` holds a socket address of `len` bytes; listen(2) on the socket bound.
        unsafe {
            assert_eq!(libc::bind(fd, (&raw const storage).cast(), len), 0);
            assert_eq!(libc::listen(fd, 16), 0);
        }
        // SAFETY: `fd` is a listening socket owned by nothing else.
        let listener = unsafe { TcpListener::from_raw_fd(fd) };
        let addr = listener.local_addr().unwrap();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let mut stream = stream.unwrap();
                thread::spawn(move || {
                    let mut writer = stream.try_clone().unwrap();
                    read_slowly(&mut stream, |piece| writer.write_all(piece).unwrap());
                });
            }
        });
        addr
    }

    #[test]
    fn many_small_messages_cross_in_order_to_slow_readers_both_ways() {
        let upstream = slow_echo_server();
        let listener = reuse_port_listener("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        thread::spawn(move || run(listener, upstream));
        // Messages of 4 to 97 bytes, each numbered and written on its own, about 4 MB in all:
        // more than the forwarder's socket buffers hold while the readers wait.
        let messages: Vec<Vec<u8>> = (0u32..80_000)
            .map(|i| {
                let mut message = i.to_le_bytes().to_vec();
                message.extend((0..i % 94).map(|j| (i + j) as u8));
                message
            })
            .collect();
        let expected = messages.concat();
        // The client reads slowly too, through a small receive buffer.
        let fd = small_receive_buffer_socket(2048);
        let (storage, len) = sockaddr(addr);
        // SAFETY: `storage` holds a socket address of `len` bytes.
        let connected = unsafe { libc::connect(fd, (&raw const storage).cast(), len) };
        assert_eq!(connected, 0, "connect: {}", io::Error::last_os_error());
        // SAFETY: `fd` is a connected socket owned by nothing else.
        let mut client = unsafe { TcpStream::from_raw_fd(fd) };
        client.set_nodelay(true).unwrap();
        let mut reader = client.try_clone().unwrap();
        let read = thread::spawn(move || {
            let mut back = Vec::with_capacity(expected.len());
            read_slowly(&mut reader, |piece| back.extend_from_slice(piece));
            assert_eq!(back.len(), expected.len(), "bytes echoed");
            let differs = back.iter().zip(&expected).position(|(a, b)| a != b);
            assert_eq!(differs, None, "the first byte of the echo that differs");
        });
        for message in &messages {
            client.write_all(message).unwrap();
        }
        client.shutdown(std::net::Shutdown::Write).unwrap();
        read.join().unwrap();
    }
}
