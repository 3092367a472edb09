//! One message in, one message out: the step both transports share. A query
//! is decoded, either answered here through the [`Handler`] and hickory's
//! encoder, or marked for the upstream forwarder when it is outside every
//! Trellis zone and a forwarder is configured.

use crate::handler::Handler;
use hickory_server::net::NetError;
use hickory_server::net::runtime::TokioTime;
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::rr::Record;
use hickory_server::proto::serialize::binary::BinEncoder;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponse;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::task::{Context, Waker};

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

/// What to do with one received message.
#[derive(Debug, PartialEq)]
pub enum Reply {
    /// Send these bytes back.
    Answer(Vec<u8>),
    /// Hand the query, unchanged, to the forwarder.
    Forward,
    /// Nothing to send (undecodable).
    Drop,
}

/// Decodes `message` and answers it. The handler never waits on I/O (the
/// response is captured, not sent), so its future completes on the first
/// poll. Over UDP the answer is cut to the client's EDNS payload size (512
/// bytes without EDNS) with TC set, as hickory's encoder does; over TCP the
/// limit is the 64 KiB a TCP DNS message can hold.
pub fn answer(
    handler: &Handler,
    message: &[u8],
    src: SocketAddr,
    protocol: Protocol,
    out: &Arc<Mutex<Vec<u8>>>,
) -> Reply {
    let Ok(request) = Request::from_bytes(message.to_vec(), src, protocol) else {
        crate::metrics::malformed();
        return Reply::Drop;
    };
    if handler.forwards(&request) {
        return Reply::Forward;
    }
    let max_size = match protocol {
        Protocol::Udp => request
            .edns
            .as_ref()
            .map_or(512, |e| e.max_payload().max(512)),
        _ => u16::MAX,
    };
    let capture = Capture {
        out: out.clone(),
        max_size,
    };
    let future = handler.handle_request::<_, TokioTime>(&request, capture);
    let mut future = std::pin::pin!(future);
    if future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
        .is_pending()
    {
        tracing::warn!("DNS handler did not complete at once; dropping the query");
        return Reply::Drop;
    }
    let bytes = std::mem::take(&mut *out.lock().unwrap_or_else(|e| e.into_inner()));
    if bytes.is_empty() {
        Reply::Drop
    } else {
        Reply::Answer(bytes)
    }
}
