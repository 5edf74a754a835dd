//! The archive's HTTP client for S3-compatible stores: one HTTP/1.1 connection per request on
//! the node's own hyper, so the build carries no second HTTP client or TLS stack. `http://`
//! only (see `[archive] endpoint`).

use http_body_util::BodyExt;
use object_store::client::{
    ClientOptions, HttpClient, HttpConnector, HttpError, HttpErrorKind, HttpRequest, HttpResponse, HttpResponseBody,
    HttpService,
};

#[derive(Debug, Default, Clone, Copy)]
pub struct PlainHttp;

impl HttpConnector for PlainHttp {
    fn connect(&self, _options: &ClientOptions) -> object_store::Result<HttpClient> {
        Ok(HttpClient::new(PlainHttpService))
    }
}

#[derive(Debug)]
struct PlainHttpService;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Message(String);

#[async_trait::async_trait]
impl HttpService for PlainHttpService {
    async fn call(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        let (mut parts, body) = req.into_parts();
        let uri = parts.uri.clone();
        if uri.scheme_str() != Some("http") {
            return Err(HttpError::new(HttpErrorKind::Request, Message(format!("only http:// is served: {uri}"))));
        }
        let host = uri.host().ok_or_else(|| HttpError::new(HttpErrorKind::Request, Message("no host".into())))?;
        let port = uri.port_u16().unwrap_or(80);
        let tcp = tokio::net::TcpStream::connect((host, port))
            .await
            .map_err(|e| HttpError::new(HttpErrorKind::Connect, e))?;
        let _ = tcp.set_nodelay(true);
        let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .map_err(|e| HttpError::new(HttpErrorKind::Connect, e))?;
        // Ends when the response has been read and the sender is gone.
        tokio::spawn(connection);
        let authority = match uri.port_u16() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_owned(),
        };
        parts.uri = uri
            .path_and_query()
            .map_or_else(|| "/".parse(), |pq| pq.as_str().parse())
            .map_err(|e| HttpError::new(HttpErrorKind::Request, e))?;
        if let Ok(value) = authority.parse() {
            parts.headers.insert(http::header::HOST, value);
        }
        let response = sender
            .send_request(http::Request::from_parts(parts, body))
            .await
            .map_err(|e| HttpError::new(HttpErrorKind::Request, e))?;
        let (parts, body) = response.into_parts();
        let body = body.map_err(|e| HttpError::new(HttpErrorKind::Decode, e));
        Ok(http::Response::from_parts(parts, HttpResponseBody::new(body)))
    }
}
