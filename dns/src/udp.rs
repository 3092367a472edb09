//! The UDP fast path. hickory's server spawns a task per datagram and sends
//! every response through a channel to a writer task; this loop decodes the
//! datagram with hickory, runs the same [`Handler`], and sends the encoded
//! answer inline. Truncation (TC) follows the same rule as hickory's encoder:
//! the client's EDNS payload size, or 512 bytes without EDNS. TCP stays on
//! hickory's `Server`.

use crate::handler::Handler;
use hickory_server::net::NetError;
use hickory_server::net::runtime::TokioTime;
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::rr::Record;
use hickory_server::proto::serialize::binary::BinEncoder;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponse;
use std::sync::{Arc, Mutex};
use tokio::net::UdpSocket;

/// Largest datagram read; larger ones are not DNS queries we answer.
const MAX_DATAGRAM: usize = 4096;

/// Keeps the encoded response instead of sending it.
#[derive(Clone)]
struct Capture {
    out: Arc<Mutex<Vec<u8>>>,
    max_size: u16,
}

#[async_trait::async_trait]
impl ResponseHandler for Capture {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        out.clear();
        let mut encoder = BinEncoder::new(&mut out);
        encoder.set_max_size(self.max_size);
        Ok(response.destructive_emit(&mut encoder)?)
    }
}

/// Answers datagrams on `socket` until the task is dropped. Several loops
/// may share one socket.
pub async fn serve(socket: Arc<UdpSocket>, handler: Handler) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let out = Arc::new(Mutex::new(Vec::with_capacity(512)));
    loop {
        let (n, src) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "UDP receive failed");
                continue;
            }
        };
        // Undecodable datagrams are dropped: there is no ID to answer to.
        let Ok(request) = Request::from_bytes(buf[..n].to_vec(), src, Protocol::Udp) else {
            crate::metrics::malformed();
            continue;
        };
        let max_size = request
            .edns
            .as_ref()
            .map_or(512, |e| e.max_payload().max(512));
        let capture = Capture {
            out: out.clone(),
            max_size,
        };
        handler
            .handle_request::<_, TokioTime>(&request, capture)
            .await;
        let response = std::mem::take(&mut *out.lock().unwrap_or_else(|e| e.into_inner()));
        if !response.is_empty() {
            if let Err(e) = socket.send_to(&response, src).await {
                tracing::debug!(%src, error = %e, "UDP send failed");
            }
        }
        *out.lock().unwrap_or_else(|e| e.into_inner()) = response;
    }
}
