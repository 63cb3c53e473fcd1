//! Sockets: accepts connections and moves bytes between each socket and its [`Session`],
//! which holds all protocol logic. Each connection is its own task; all share one store.

use std::io;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{info, warn};

use crate::framing::FramingError;
use crate::journal::Journal;
use crate::session::Session;
use crate::store::Store;

/// How many bytes a read may take from a socket.
const READ_LEN: usize = 64 * 1024;

/// Why a connection ended other than by the client closing it between requests.
#[derive(Debug, thiserror::Error)]
enum ConnectionError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error(transparent)]
    Framing(#[from] FramingError),
    #[error("the client closed the connection in the middle of an envelope")]
    Truncated,
}

/// Accepts connections on `listener` for ever, each served by its own task, recording what
/// each request reads as in `journal`.
pub async fn serve(
    listener: TcpListener,
    store: Arc<Mutex<Store>>,
    journal: Arc<Journal>,
) -> io::Result<()> {
    loop {
        let (socket, peer) = listener.accept().await?;
        let store = Arc::clone(&store);
        let journal = Arc::clone(&journal);
        tokio::spawn(async move {
            info!(%peer, "connection opened");
            match connection(socket, store, journal).await {
                Ok(()) => info!(%peer, "connection closed"),
                Err(error) => warn!(%peer, %error, "connection ended"),
            }
        });
    }
}

/// Serves one connection: reads what the client sends, and writes the responses to the
/// requests it completes before reading on. Bytes that break the framing end it, after the
/// responses to the requests before them.
async fn connection(
    mut socket: TcpStream,
    store: Arc<Mutex<Store>>,
    journal: Arc<Journal>,
) -> Result<(), ConnectionError> {
    socket.set_nodelay(true)?;
    let mut session = Session::journaled(socket.local_addr()?, journal);
    let mut received = vec![0u8; READ_LEN];
    let mut responses = Vec::new();
    loop {
        let n = socket.read(&mut received).await?;
        if n == 0 {
            return match session.is_partial() {
                true => Err(ConnectionError::Truncated),
                false => Ok(()),
            };
        }
        let framed = session.receive(&received[..n], &store, &mut responses);
        socket.write_all(&responses).await?;
        responses.clear();
        framed?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axoneme_cassandra::segment::{self, Format};

    /// A v5 QUERY envelope for `USE system`.
    fn use_system() -> Vec<u8> {
        let mut body = 10i32.to_be_bytes().to_vec();
        body.extend_from_slice(b"USE system");
        body.extend_from_slice(&[0, 1, 0, 0, 0, 0]);
        envelope(5, 0x07, &body)
    }

    fn envelope(version: u8, op: u8, body: &[u8]) -> Vec<u8> {
        let mut bytes = vec![version, 0, 0, 1, op];
        bytes.extend_from_slice(&(body.len() as u32).to_be_bytes());
        bytes.extend_from_slice(body);
        bytes
    }

    async fn connected() -> TcpStream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(serve(
            listener,
            Arc::new(Mutex::new(Store::new())),
            Arc::new(Journal::off()),
        ));
        let mut client = TcpStream::connect(address).await.unwrap();
        client.write_all(&envelope(5, 0x01, &[0, 0])).await.unwrap();
        let mut ready = [0u8; 9];
        client.read_exact(&mut ready).await.unwrap();
        assert_eq!(ready, [0x85, 0, 0, 1, 0x02, 0, 0, 0, 0]);
        client
    }

    #[tokio::test]
    async fn answers_segments_and_closes_on_a_bad_crc() {
        let mut client = connected().await;
        let mut request = Vec::new();
        segment::encode(Format::Plain, &use_system(), &mut request);
        client.write_all(&request).await.unwrap();
        let mut response = vec![0u8; 6 + 9 + 4 + 2 + 6 + 4];
        client.read_exact(&mut response).await.unwrap();
        let header = segment::parse_header(Format::Plain, &response)
            .unwrap()
            .unwrap();
        let mut scratch = Vec::new();
        let payload = segment::decode_payload(&header, &response, &mut scratch).unwrap();
        assert!(header.self_contained);
        assert_eq!(payload[..5], [0x85, 0, 0, 1, 0x08]);

        let last = request.len() - 1;
        request[last] ^= 0x80;
        client.write_all(&request).await.unwrap();
        let mut rest = Vec::new();
        assert_eq!(client.read_to_end(&mut rest).await.unwrap(), 0);
    }
}
