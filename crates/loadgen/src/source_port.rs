//! Leaving the port of a socket bound to a source address to `connect`: it only sets the socket
//! option (IP_BIND_ADDRESS_NO_PORT), and binds and connects nothing itself.
//!
//! A socket bound with port 0 takes a port at `bind`, from the range `connect` draws on too, and
//! holds it out of every later `connect`'s reach until it and its TIME_WAIT are gone: thousands
//! of connections a run, run after run, use the range up, for the proxies' own connections to
//! the server as well. With the option, `connect` picks the port, which only has to make the
//! connection's four-tuple unique.

use std::os::fd::AsRawFd;

/// Sets IP_BIND_ADDRESS_NO_PORT on `socket`, before it is bound.
pub(crate) fn leave_port_to_connect(socket: &impl AsRawFd) -> std::io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: setsockopt only reads `on`, which lives across the call, for the length given;
    // the descriptor is the caller's open socket.
    let set = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            std::ptr::addr_of!(on).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if set == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::{TcpListener, TcpSocket};

    #[tokio::test]
    async fn a_bound_socket_gets_its_port_only_when_it_connects() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let plain = TcpSocket::new_v4().unwrap();
        plain.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        assert_ne!(
            plain.local_addr().unwrap().port(),
            0,
            "without the option, at bind"
        );

        let socket = TcpSocket::new_v4().unwrap();
        leave_port_to_connect(&socket).unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        assert_eq!(socket.local_addr().unwrap().port(), 0);
        let stream = socket
            .connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        assert_ne!(stream.local_addr().unwrap().port(), 0);
    }
}
