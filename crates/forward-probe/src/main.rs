//! `forward-probe`: plain TCP forwarders that copy bytes between each client and a connection
//! of its own to the upstream, with no parser, policy or log, so that the benchmark can tell
//! what the forwarding path itself costs on a kernel interface.
//!
//! Each runs `--threads` threads, each with a listener of its own on the same port
//! (`SO_REUSEPORT`), and keeps every connection on the thread that accepted it:
//! - `epoll`: a tokio current-thread runtime per thread, a task per connection copying both
//!   ways ([`tokio::io::copy_bidirectional`]): readiness, then a `read` and a `write` system
//!   call per message, as Axoneme's workers do.
//! - `uring`: an io_uring per thread ([`uring`]): multishot accept, multishot receive into
//!   buffers provided to the kernel through a buffer ring, one send in flight per direction
//!   gathering every buffer the direction holds, every submission of a loop turn in one
//!   `io_uring_enter`.
//!
//! It measures; it is not a proxy: the upstream is connected to with a blocking connect on the
//! accepting thread, and an error ends only its connection.

// io_uring hands the kernel raw buffers and descriptors; each unsafe block says why it is sound.
#[allow(unsafe_code)]
mod uring;

use std::net::SocketAddr;
use std::thread;

use anyhow::Context;
use clap::{Parser, ValueEnum};

/// Plain TCP forwarders for measuring the forwarding path's kernel crossings.
#[derive(Parser)]
struct Args {
    /// The kernel interface the forwarder waits on.
    #[arg(long, value_enum)]
    mode: Mode,
    /// Address to listen on.
    #[arg(long)]
    listen: SocketAddr,
    /// Address every client is forwarded to.
    #[arg(long)]
    upstream: SocketAddr,
    /// Threads, each with its own listener and connections.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    Epoll,
    Uring,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let threads: Vec<_> = (0..args.threads.max(1))
        .map(|i| {
            let listener = uring::reuse_port_listener(args.listen)
                .with_context(|| format!("listening on {}", args.listen))?;
            let (mode, upstream) = (args.mode, args.upstream);
            thread::Builder::new()
                .name(format!("forward-{i}"))
                .spawn(move || match mode {
                    Mode::Epoll => epoll(listener, upstream),
                    Mode::Uring => uring::run(listener, upstream),
                })
                .context("starting a forwarding thread")
        })
        .collect::<anyhow::Result<_>>()?;
    for thread in threads {
        thread
            .join()
            .map_err(|_| anyhow::anyhow!("a forwarding thread panicked"))??;
    }
    Ok(())
}

/// Forwards every connection `listener` accepts to `upstream`, over a current-thread runtime.
fn epoll(listener: std::net::TcpListener, upstream: SocketAddr) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    runtime.block_on(async move {
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        loop {
            let (mut client, _) = listener.accept().await?;
            tokio::spawn(async move {
                let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    })
}
