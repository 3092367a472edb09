//! The request handler: picks the asking network, looks the question up in
//! that network's view, and answers. The lookup itself is `View::lookup`.

use crate::forward::Forwarder;
use crate::view::{Answer, View};
use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{
    Edns, Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode,
};
use hickory_server::proto::rr::{DNSClass, Record};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use ipnet::IpNet;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use tokio::sync::watch;

/// Every network's view, swapped in whole when one changes.
pub type Views = HashMap<String, Arc<View>>;

/// Which network a query comes from.
#[derive(Clone, Debug, Default)]
pub struct Networks {
    /// The network of the listener the query arrived on.
    pub listener: Option<String>,
    /// Client source prefixes; the longest match wins over the listener's.
    pub sources: Vec<(IpNet, String)>,
}

impl Networks {
    fn of(&self, src: IpAddr) -> Option<&str> {
        self.sources
            .iter()
            .filter(|(net, _)| net.contains(&src))
            .max_by_key(|(net, _)| net.prefix_len())
            .map(|(_, n)| n.as_str())
            .or(self.listener.as_deref())
    }
}

#[derive(Clone)]
pub struct Handler {
    views: watch::Receiver<Arc<Views>>,
    networks: Arc<Networks>,
    forwarder: Option<Arc<Forwarder>>,
}

impl Handler {
    pub fn new(
        views: watch::Receiver<Arc<Views>>,
        networks: Networks,
        forwarder: Option<Arc<Forwarder>>,
    ) -> Handler {
        Handler {
            views,
            networks: Arc::new(networks),
            forwarder,
        }
    }

    /// The network a query from `src` comes from, and its view.
    pub(crate) fn view_of(&self, src: IpAddr) -> (Option<&str>, Option<Arc<View>>) {
        let network = self.networks.of(src);
        let view = network.and_then(|n| self.views.borrow().get(n).cloned());
        (network, view)
    }

    pub fn forwarder(&self) -> Option<&Arc<Forwarder>> {
        self.forwarder.as_ref()
    }

    /// Whether `request` goes to the forwarder: a well-formed IN query, from
    /// a network we serve, for a name outside every zone of that network.
    /// Names inside a zone never leave, so a service the network may not see
    /// is NXDOMAIN here, not whatever the upstream thinks.
    pub fn forwards(&self, request: &Request) -> bool {
        if self.forwarder.is_none()
            || request.metadata.message_type != MessageType::Query
            || request.metadata.op_code != OpCode::Query
        {
            return false;
        }
        let Ok(info) = request.request_info() else {
            return false;
        };
        if info.query.query_class() != DNSClass::IN {
            return false;
        }
        let views = self.views.borrow();
        self.networks
            .of(request.src().ip())
            .and_then(|n| views.get(n))
            .is_some_and(|view| !view.in_zone(info.query.name()))
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let edns = request.edns.as_ref().map(|req| {
            let mut e = Edns::new();
            e.set_max_payload(req.max_payload().max(512));
            e.set_version(0);
            e
        });
        let mut meta = Metadata::response_from_request(&request.metadata);
        let views = self.views.borrow().clone();
        let network = self.networks.of(request.src().ip());
        let mut answers: Vec<Record> = Vec::new();
        let mut soa: Option<Record> = None;
        let query = request.request_info().ok().map(|i| i.query);
        let (qname, qtype) = match query {
            Some(q) => (Some(q.name()), Some(q.query_type())),
            None => (None, None),
        };
        meta.response_code = if request.metadata.message_type != MessageType::Query {
            ResponseCode::FormErr
        } else if request.metadata.op_code != OpCode::Query {
            ResponseCode::NotImp
        } else {
            match (query, network.and_then(|n| views.get(n))) {
                (None, _) => ResponseCode::FormErr,
                (Some(q), _) if q.query_class() != DNSClass::IN => ResponseCode::Refused,
                (Some(_), None) => ResponseCode::Refused,
                (Some(q), Some(view)) => match view.lookup(q.name(), q.query_type()) {
                    Answer::Records(r) => {
                        meta.authoritative = true;
                        answers = r;
                        ResponseCode::NoError
                    }
                    Answer::NoData(s) => {
                        meta.authoritative = true;
                        soa = Some(s);
                        ResponseCode::NoError
                    }
                    Answer::NxDomain(s) => {
                        meta.authoritative = true;
                        soa = Some(s);
                        ResponseCode::NXDomain
                    }
                    Answer::Refused => ResponseCode::Refused,
                },
            }
        };
        tracing::debug!(
            src = %request.src(),
            network = network.unwrap_or("-"),
            name = ?qname.map(|n| n.to_string()),
            qtype = ?qtype,
            rcode = %meta.response_code,
            "query"
        );
        crate::metrics::record(network, qtype, meta.response_code);
        let builder = MessageResponseBuilder::new(&request.queries, edns.as_ref());
        let msg = builder.build(
            meta,
            answers.iter(),
            Vec::<&Record>::new(),
            soa.as_ref(),
            Vec::<&Record>::new(),
        );
        match response.send_response(msg).await {
            Ok(info) => info,
            Err(e) => {
                tracing::warn!(src = %request.src(), error = %e, "could not send a DNS response");
                meta.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header {
                    metadata: meta,
                    counts: HeaderCounts::default(),
                })
            }
        }
    }
}
