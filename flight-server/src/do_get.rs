//! `DoGet` answered without copying the Arrow data into gRPC's buffer.
//!
//! # Why
//!
//! Every byte a segment streams was copied three times in the server: from
//! the decoder's Arrow buffers into the IPC message body (Arrow's encoder),
//! from that body into tonic's frame buffer (prost encoding a `bytes`
//! field), and into the socket (the kernel). tonic's codecs can only write
//! into its buffer, so the second copy cannot be avoided through a codec.
//!
//! [`FastDoGet`] routes the `DoGet` method around tonic's codec. The
//! request is decoded and the service called as tonic would; the response
//! body then yields each `FlightData` as two HTTP/2 data chunks: the head
//! (the gRPC length prefix, the protobuf fields before the body, the
//! body's key and length) with the body's first bytes, [`FIRST_CHUNK`] in
//! all, and the rest of the IPC body, handed to hyper as the same
//! reference-counted [`Bytes`] the encoder made. The bytes on the wire are
//! exactly what tonic would have sent (prost writes fields in tag order,
//! and the body, field 1000, comes last), so every Flight client reads
//! them unchanged. Every other method goes to tonic's generated server.
//!
//! Why the first chunk carries body bytes: a chunk of a few hundred bytes
//! becomes an HTTP/2 frame and a socket write of its own. Measured with
//! hopper's client (1 MiB frames, `data-plane --compare-server`), a head
//! sent alone cost the server more kernel time than the copy it saved;
//! a first chunk of 64 KiB (a whole number of HTTP/2's default 16 KiB
//! frames) costs a copy of 3 % of a 2 MiB message and no small frame.
//!
//! Errors keep gRPC's shape: a call refused before its first message is a
//! trailers-only response, a stream that fails later ends with the error
//! in its trailers.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{FlightData, Ticket};
use bytes::{BufMut, Bytes, BytesMut};
use futures::{Stream, StreamExt, TryStreamExt};
use http_body::Frame;
use prost::Message;
use tonic::body::Body;
use tonic::codegen::{http, BoxFuture, Service};
use tonic::server::NamedService;
use tonic::{Request, Status};
use tonic_prost::ProstCodec;

use crate::service::HopperFlightService;

/// The path of Flight's `DoGet` method.
const DO_GET: &str = "/arrow.flight.protocol.FlightService/DoGet";

/// The largest message either way, as tonic's limits are set for the
/// other methods.
pub const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// The size of a message's first chunk: its head and as much of its body
/// as fits (copied); the rest of the body follows without a copy.
pub const FIRST_CHUNK: usize = 64 * 1024;

/// The protobuf field number of `FlightData.data_body`.
const DATA_BODY_FIELD: u32 = 1000;

/// The Flight service: `DoGet` through [`DoGetBody`], every other method
/// through tonic's generated server.
#[derive(Clone)]
pub struct FastDoGet {
    service: Arc<HopperFlightService>,
    generated: FlightServiceServer<HopperFlightService>,
}

impl FastDoGet {
    /// Serves `service`.
    pub fn new(service: HopperFlightService) -> Self {
        let service = Arc::new(service);
        let generated = FlightServiceServer::from_arc(service.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        Self { service, generated }
    }
}

impl NamedService for FastDoGet {
    const NAME: &'static str = <FlightServiceServer<HopperFlightService> as NamedService>::NAME;
}

impl Service<http::Request<Body>> for FastDoGet {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        if req.uri().path() != DO_GET {
            return self.generated.call(req);
        }
        let service = self.service.clone();
        Box::pin(async move {
            Ok(match do_get(&service, req).await {
                Ok(response) => response,
                Err(status) => status.into_http(),
            })
        })
    }
}

/// Decodes the ticket, calls the service, and answers with a [`DoGetBody`].
async fn do_get(
    service: &HopperFlightService,
    req: http::Request<Body>,
) -> Result<http::Response<Body>, Status> {
    // This build of tonic compresses nothing, so neither does this path.
    if let Some(encoding) = req.headers().get("grpc-encoding") {
        if encoding != "identity" {
            return Err(Status::unimplemented(format!(
                "request compression {} is not supported; send DoGet uncompressed",
                encoding.to_str().unwrap_or("(unreadable)")
            )));
        }
    }
    let (parts, body) = req.into_parts();
    let mut messages = std::pin::pin!(tonic::codec::Streaming::<Ticket>::new_request(
        tonic::codec::Codec::decoder(&mut ProstCodec::<FlightData, Ticket>::default()),
        body,
        None,
        Some(MAX_MESSAGE),
    ));
    // A request that is not one `Ticket` is the caller's mistake, not the
    // server's (tonic's decoder would call it an internal error).
    let not_a_ticket = |e: Status| {
        Status::invalid_argument(format!(
            "DoGet's request is not a Flight Ticket: {}",
            e.message()
        ))
    };
    let ticket = messages
        .try_next()
        .await
        .map_err(not_a_ticket)?
        .ok_or_else(|| Status::invalid_argument("DoGet sent no ticket"))?;
    if messages.try_next().await.map_err(not_a_ticket)?.is_some() {
        return Err(Status::invalid_argument(
            "DoGet takes one ticket; the request held more than one message",
        ));
    }
    let request = Request::from_http(http::Request::from_parts(parts, ticket));
    let response = service.do_get(request).await?;
    let (metadata, stream, extensions) = response.into_parts();
    let mut headers = metadata.into_headers();
    // The status goes in the trailers, as tonic sanitizes it.
    for reserved in ["grpc-status", "grpc-message", "grpc-status-details-bin"] {
        headers.remove(reserved);
    }
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    let mut response = http::Response::new(Body::new(DoGetBody::new(stream)));
    *response.version_mut() = http::Version::HTTP_2;
    *response.headers_mut() = headers;
    *response.extensions_mut() = extensions;
    Ok(response)
}

/// A `DoGet` response: each message as its head and its body, then the
/// trailers with the call's status.
pub struct DoGetBody<S> {
    messages: S,
    /// The body of the message whose head was just yielded.
    body: Option<Bytes>,
    ended: bool,
}

impl<S> DoGetBody<S> {
    /// The response to a call whose messages `messages` yields.
    pub fn new(messages: S) -> Self {
        Self {
            messages,
            body: None,
            ended: false,
        }
    }
}

impl<S> http_body::Body for DoGetBody<S>
where
    S: Stream<Item = Result<FlightData, Status>> + Unpin,
{
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(body) = self.body.take() {
            return Poll::Ready(Some(Ok(Frame::data(body))));
        }
        if self.ended {
            return Poll::Ready(None);
        }
        let status = match self.messages.poll_next_unpin(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Some(Ok(message))) => match split(message) {
                Ok((head, body)) => {
                    self.body = (!body.is_empty()).then_some(body);
                    return Poll::Ready(Some(Ok(Frame::data(head))));
                }
                Err(status) => status,
            },
            Poll::Ready(Some(Err(status))) => status,
            Poll::Ready(None) => Status::ok(""),
        };
        self.ended = true;
        let mut trailers = http::HeaderMap::new();
        if let Err(unsendable) = status.add_header(&mut trailers) {
            trailers.clear();
            let _ = unsendable.add_header(&mut trailers);
        }
        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
    }

    fn is_end_stream(&self) -> bool {
        self.ended && self.body.is_none()
    }
}

/// One message as gRPC frames it, in two parts: everything up to the IPC
/// body with the body's first bytes, [`FIRST_CHUNK`] in all (or the whole
/// message if it is smaller), and the rest of the body, not copied. Their
/// concatenation is the length-prefixed protobuf encoding of `message`.
fn split(mut message: FlightData) -> Result<(Bytes, Bytes), Status> {
    let body = std::mem::take(&mut message.data_body);
    let mut tail_len = 0;
    if !body.is_empty() {
        tail_len = prost::encoding::key_len(DATA_BODY_FIELD)
            + prost::encoding::encoded_len_varint(body.len() as u64);
    }
    let len = message.encoded_len() + tail_len + body.len();
    if len > MAX_MESSAGE {
        return Err(Status::out_of_range(format!(
            "a DoGet message of {len} bytes exceeds the limit of {MAX_MESSAGE}; \
             lower the server's --batch-bytes"
        )));
    }
    let mut head = BytesMut::with_capacity(FIRST_CHUNK.min(5 + len));
    head.put_u8(0); // not compressed
    head.put_u32(len as u32);
    message
        .encode(&mut head)
        .map_err(|e| Status::internal(format!("encoding a DoGet message: {e}")))?;
    if !body.is_empty() {
        prost::encoding::encode_key(
            DATA_BODY_FIELD,
            prost::encoding::WireType::LengthDelimited,
            &mut head,
        );
        prost::encoding::encode_varint(body.len() as u64, &mut head);
    }
    let copied = FIRST_CHUNK.saturating_sub(head.len()).min(body.len());
    head.extend_from_slice(&body[..copied]);
    Ok((head.freeze(), body.slice(copied..)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_flight::FlightDescriptor;
    use http_body_util::BodyExt;

    /// What tonic's codec sends for `message`: the gRPC prefix and prost's
    /// encoding of the whole message.
    fn tonic_framing(message: &FlightData) -> Vec<u8> {
        let mut out = vec![0];
        out.extend_from_slice(&(message.encoded_len() as u32).to_be_bytes());
        message.encode(&mut out).unwrap();
        out
    }

    fn messages() -> Vec<FlightData> {
        let big = Bytes::from((0..300_000u32).map(|i| i as u8).collect::<Vec<_>>());
        vec![
            FlightData::default(),
            FlightData {
                data_header: Bytes::from_static(b"schema"),
                ..Default::default()
            },
            FlightData {
                flight_descriptor: Some(FlightDescriptor::new_cmd(b"cmd".to_vec())),
                data_header: Bytes::from_static(b"header"),
                app_metadata: Bytes::from_static(b"meta"),
                data_body: Bytes::from_static(b"x"),
            },
            FlightData {
                data_header: Bytes::from(vec![7; 200]),
                data_body: big.slice(..127),
                ..Default::default()
            },
            FlightData {
                data_header: Bytes::from(vec![7; 300]),
                data_body: big,
                ..Default::default()
            },
        ]
    }

    #[test]
    fn the_split_message_is_exactly_what_tonic_sends() {
        for message in messages() {
            let expected = tonic_framing(&message);
            let (head, rest) = split(message.clone()).unwrap();
            assert_eq!([&head[..], &rest[..]].concat(), expected);
            assert_eq!(head.len(), FIRST_CHUNK.min(expected.len()));
            // The rest of the body is the encoder's buffer itself.
            if !rest.is_empty() {
                let copied = message.data_body.len() - rest.len();
                assert_eq!(rest.as_ptr(), message.data_body[copied..].as_ptr());
            }
        }
    }

    #[tokio::test]
    async fn the_body_streams_every_message_then_the_status() {
        let sent = messages();
        let mut items: Vec<Result<FlightData, Status>> = sent.iter().cloned().map(Ok).collect();
        items.push(Err(Status::permission_denied("no, and ünïcode")));
        let mut body = DoGetBody::new(futures::stream::iter(items));
        let mut data = Vec::new();
        let mut trailers = None;
        while let Some(frame) = body.frame().await {
            let frame = frame.unwrap();
            match frame.into_data() {
                Ok(chunk) => data.extend_from_slice(&chunk),
                Err(frame) => trailers = Some(frame.into_trailers().unwrap()),
            }
        }
        assert!(http_body::Body::is_end_stream(&body));
        let expected: Vec<u8> = sent.iter().flat_map(tonic_framing).collect();
        assert_eq!(data, expected);
        let status = Status::from_header_map(&trailers.unwrap()).unwrap();
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
        assert_eq!(status.message(), "no, and ünïcode");
    }

    #[tokio::test]
    async fn a_stream_that_ends_says_ok() {
        let mut body = DoGetBody::new(futures::stream::iter(vec![Ok(FlightData::default())]));
        let mut trailers = None;
        while let Some(frame) = body.frame().await {
            if let Ok(t) = frame.unwrap().into_trailers() {
                trailers = Some(t);
            }
        }
        let status = Status::from_header_map(&trailers.unwrap()).unwrap();
        assert_eq!(status.code(), tonic::Code::Ok);
    }

    #[test]
    fn a_message_over_the_limit_is_refused_with_what_to_do() {
        let message = FlightData {
            data_body: Bytes::from(vec![0; MAX_MESSAGE]),
            ..Default::default()
        };
        let e = split(message).unwrap_err();
        assert_eq!(e.code(), tonic::Code::OutOfRange);
        assert!(e.message().contains("--batch-bytes"), "{}", e.message());
    }
}
