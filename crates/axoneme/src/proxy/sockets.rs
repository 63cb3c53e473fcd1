//! The socket options of transparent proxying: accepting connections addressed to others
//! (IP_TRANSPARENT), marking the proxy's own upstream connections (SO_MARK), connecting from
//! the client's address, and reading a redirected connection's original destination
//! (SO_ORIGINAL_DST, IP6T_SO_ORIGINAL_DST); and the open-file limit that bounds how many sockets
//! the agent may hold.
//!
//! Every `unsafe` call of the crate is here, each with what makes it sound.

use std::io;
use std::mem::size_of;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;

use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// Connections a listening socket may queue.
const BACKLOG: u32 = 1024;

/// Sets an integer socket option.
fn set_int(
    socket: &impl AsRawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: the descriptor is an open socket owned by `socket`, which outlives the call; the
    // option value points at a live `c_int` whose size is the length passed.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    match rc {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// Lets `socket` accept connections for, or bind to, addresses that are not local.
fn set_transparent(socket: &TcpSocket, v6: bool) -> io::Result<()> {
    let result = match v6 {
        true => set_int(socket, libc::SOL_IPV6, libc::IPV6_TRANSPARENT, 1),
        false => set_int(socket, libc::SOL_IP, libc::IP_TRANSPARENT, 1),
    };
    result.map_err(|e| {
        with_context(
            e,
            &format!("cannot set IP_TRANSPARENT (needs CAP_NET_ADMIN: {GRANT_NET_ADMIN})"),
        )
    })
}

/// How to give the agent CAP_NET_ADMIN, which transparent listeners, socket marks and redirect
/// rules need.
pub(crate) const GRANT_NET_ADMIN: &str = "run the agent as root or with that capability \
     (AmbientCapabilities=CAP_NET_ADMIN in its systemd unit, capabilities.add: [NET_ADMIN] in a \
     Kubernetes securityContext)";

/// Why listening on `addr` failed with `error` for want of a privilege, and how to fix it; empty
/// when that is not why.
pub(crate) fn missing_privilege(error: &io::Error, addr: SocketAddr) -> String {
    if error.kind() != io::ErrorKind::PermissionDenied || addr.port() >= 1024 {
        return String::new();
    }
    " (ports below 1024 need CAP_NET_BIND_SERVICE: run the agent as root or with that \
     capability, e.g. `setcap cap_net_bind_service=+ep` on its binary or \
     AmbientCapabilities=CAP_NET_BIND_SERVICE in its systemd unit, or listen on port 1024 or \
     above)"
        .to_owned()
}

fn with_context(error: io::Error, what: &str) -> io::Error {
    io::Error::new(error.kind(), format!("{what}: {error}"))
}

fn new_socket(addr: SocketAddr) -> io::Result<TcpSocket> {
    match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
}

/// Binds a listening socket; a `transparent` one accepts connections addressed to any
/// destination that TPROXY rules steer to it.
pub(crate) fn listen(addr: SocketAddr, transparent: bool) -> io::Result<TcpListener> {
    let socket = new_socket(addr)?;
    socket.set_reuseaddr(true)?;
    if transparent {
        set_transparent(&socket, addr.is_ipv6())?;
    }
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// How the proxy opens its upstream connections.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct UpstreamOptions {
    /// The socket mark, so that redirection rules skip the proxy's own traffic.
    pub mark: Option<u32>,
    /// Connect from the client's address (port chosen by the kernel).
    pub keep_client_address: bool,
}

/// Connects to `upstream` from `client`'s address when the options say so, with the mark.
pub(crate) async fn connect(
    upstream: SocketAddr,
    client: SocketAddr,
    options: UpstreamOptions,
) -> io::Result<TcpStream> {
    let socket = new_socket(upstream)?;
    if let Some(mark) = options.mark {
        set_int(
            &socket,
            libc::SOL_SOCKET,
            libc::SO_MARK,
            mark as libc::c_int,
        )
        .map_err(|e| {
            with_context(
                e,
                &format!("cannot set SO_MARK (needs CAP_NET_ADMIN: {GRANT_NET_ADMIN})"),
            )
        })?;
    }
    if options.keep_client_address {
        set_transparent(&socket, upstream.is_ipv6())?;
        socket.bind(SocketAddr::new(client.ip(), 0)).map_err(|e| {
            with_context(
                e,
                &format!("cannot bind the client's address {}", client.ip()),
            )
        })?;
    }
    socket.connect(upstream).await
}

/// The destination a REDIRECT or DNAT rule rewrote, from connection tracking.
pub(crate) fn original_destination(stream: &TcpStream) -> io::Result<SocketAddr> {
    let local = stream.local_addr()?;
    let ipv4 = match local.ip() {
        IpAddr::V4(_) => true,
        IpAddr::V6(ip) => ip.to_ipv4_mapped().is_some(),
    };
    if ipv4 {
        let addr: libc::sockaddr_in = get(stream, libc::SOL_IP, libc::SO_ORIGINAL_DST)?;
        let ip = Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr));
        Ok(SocketAddr::new(ip.into(), u16::from_be(addr.sin_port)))
    } else {
        let addr: libc::sockaddr_in6 = get(stream, libc::SOL_IPV6, libc::IP6T_SO_ORIGINAL_DST)?;
        let ip = Ipv6Addr::from(addr.sin6_addr.s6_addr);
        Ok(SocketAddr::new(ip.into(), u16::from_be(addr.sin6_port)))
    }
}

/// A socket address structure a socket option may be read into: plain data, valid whatever
/// bytes it holds, all zeroes included.
trait SocketAddress: Sized {
    fn zeroed() -> Self;
}

impl SocketAddress for libc::sockaddr_in {
    fn zeroed() -> Self {
        // SAFETY: `sockaddr_in` is integers and arrays of integers: every bit pattern is valid.
        unsafe { std::mem::zeroed() }
    }
}

impl SocketAddress for libc::sockaddr_in6 {
    fn zeroed() -> Self {
        // SAFETY: `sockaddr_in6` is integers and arrays of integers: every bit pattern is valid.
        unsafe { std::mem::zeroed() }
    }
}

/// Reads a socket option holding a socket address.
fn get<T: SocketAddress>(
    stream: &TcpStream,
    level: libc::c_int,
    name: libc::c_int,
) -> io::Result<T> {
    let mut value = T::zeroed();
    let mut len = size_of::<T>() as libc::socklen_t;
    // SAFETY: the descriptor is an open socket owned by `stream`; the kernel writes at most
    // `len` bytes into `value`, which is exactly that large, and any bytes are a valid `T`.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            level,
            name,
            (&mut value as *mut T).cast(),
            &mut len,
        )
    };
    match rc {
        0 => Ok(value),
        _ => Err(io::Error::last_os_error()),
    }
}

/// Raises the soft open-file limit to the hard one; the soft limit now, or `None` when it cannot
/// be read.
pub(crate) fn raise_open_file_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct passed, which lives across the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct passed, which lives across the call.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit.rlim_cur = limit.rlim_max;
        }
    }
    Some(limit.rlim_cur)
}
