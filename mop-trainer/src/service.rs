//! The trainer's gRPC service, behind the [`Guard`] of its access.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use hopper_proto::trainer_server::{Trainer, TrainerServer};
use hopper_proto::{
    train_event, CheckModelRequest, CheckModelResponse, EvaluateRequest, EvaluateResponse,
    FetchStateRequest, HealthRequest, HealthResponse, OpenPartitionRequest, OpenPartitionResponse,
    Progress, ReleaseStatesRequest, ReleaseStatesResponse, StateChunk, TrainEvent,
    TrainUnitRequest, UnitResult,
};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Mutex};
use tokio_stream::wrappers::ReceiverStream;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

use super::cache::{feature_key, Batches, CacheMode, PartitionData};
use crate::error::{Error, Result};
use crate::featurize::{Featurized, Featurizer};
use crate::held_states::HeldStates;
use crate::model::Model;
use crate::row_checksum::figures;
use crate::shuffle::{shuffled, unit_seed, WINDOW};
use crate::train::{evaluate, train_partition};
use flight_client::connect::Bearer;
use flight_client::FlightSlice;
use hopper_proto::auth::Guard;
use mop_core::config::ModelConfig;

use hopper_proto::{CONNECTION_WINDOW, MAX_MESSAGE, STREAM_WINDOW};

struct Opened {
    index: u32,
    threads: u32,
    train: PartitionData,
    validation: PartitionData,
    _dir: tempfile::TempDir,
}

/// One chunk of a state this trainer sends (`FetchState`).
type ChunkResult = std::result::Result<StateChunk, Status>;

/// The trainer: its partition, a lock so that one unit runs at a time, and
/// the states it keeps for the models' next units.
pub struct TrainerService {
    opened: Arc<Mutex<Option<Opened>>>,
    held: HeldStates,
}

impl Default for TrainerService {
    fn default() -> Self {
        Self::new()
    }
}

impl TrainerService {
    /// A trainer with no partition yet.
    pub fn new() -> Self {
        Self {
            opened: Arc::new(Mutex::new(None)),
            held: HeldStates::default(),
        }
    }
}

fn status(e: Error) -> Status {
    match e {
        Error::Config(m) => Status::invalid_argument(m),
        Error::TicketRefused(m) => {
            // The runner plans again when it sees the flight-server's marker.
            let mut s = Status::failed_precondition(m);
            flight_client::refused::mark_ticket_refused(&mut s);
            s
        }
        Error::Flight(m) | Error::Unavailable(m) => Status::unavailable(m),
        other => Status::internal(other.to_string()),
    }
}

/// The model configuration a request carries, converted and validated
/// (hopper-proto's `TryFrom`): a request without one, or with one that does
/// not convert or validate, is the caller's mistake, `InvalidArgument`.
fn model_config(
    config: Option<hopper_proto::ModelConfig>,
) -> std::result::Result<ModelConfig, Status> {
    let config = config.ok_or_else(|| {
        Status::invalid_argument("the request carries no model configuration (`config`)")
    })?;
    ModelConfig::try_from(config).map_err(|e| status(e.into()))
}

/// A model built from a request's configuration: from the TorchScript
/// module the configuration carries, or else as [`Model::new`] does, and
/// from `state` unless it is empty.
fn build_model(
    config: ModelConfig,
    module: Option<&[u8]>,
    state: &[u8],
    seed: u64,
) -> Result<(Model, crate::optim::Optimizer)> {
    match (module, state.is_empty()) {
        (Some(module), true) => {
            let model = Model::new_with_module(config, module, seed)?;
            let opt = model.optimizer()?;
            Ok((model, opt))
        }
        (None, true) => {
            let model = Model::new(config, seed)?;
            let opt = model.optimizer()?;
            Ok((model, opt))
        }
        (Some(module), false) => Model::from_state_with_module(config, module, state),
        (None, false) => Model::from_state(config, state),
    }
}

/// The endpoints of a request, each with the runner's Bearer token for its
/// location if it sent one.
fn slices(eps: Vec<hopper_proto::FlightEndpoint>) -> std::result::Result<Vec<FlightSlice>, Status> {
    eps.into_iter()
        .map(|e| {
            let bearer = match e.bearer.is_empty() {
                true => None,
                false => Some(Bearer::new(e.bearer).map_err(|_| {
                    Status::invalid_argument(format!(
                        "the Bearer token for {} is not a header value",
                        e.location
                    ))
                })?),
            };
            Ok(FlightSlice {
                location: e.location,
                ticket: e.ticket,
                bearer,
            })
        })
        .collect()
}

/// Pulls featurized mini-batch material from a pass, timing the waits.
fn featurized_iter(
    batches: Batches,
    featurizer: Featurizer,
) -> Box<dyn Iterator<Item = Result<Featurized>> + Send> {
    match batches {
        Batches::Featurized(v) => {
            let n = v.lock().map(|g| g.len()).unwrap_or(0);
            Box::new((0..n).map(move |i| {
                let g = v
                    .lock()
                    .map_err(|_| Error::Config("feature cache poisoned".into()))?;
                Ok(g[i].shallow_clone())
            }))
        }
        Batches::Stream(mut rx) => Box::new(std::iter::from_fn(move || {
            rx.blocking_recv()
                .map(|b| b.and_then(|b| featurizer.featurize(&b)))
        })),
        // Each batch is added to the pass's checksum as it is taken, on the
        // training thread: the figures are complete once the pass has
        // taken every batch, and a pass that fails sends none.
        Batches::Flight { mut rx, checksum } => Box::new(std::iter::from_fn(move || {
            rx.blocking_recv().map(|b| {
                b.and_then(|b| {
                    checksum
                        .lock()
                        .map_err(|_| Error::Config("row checksum poisoned".into()))?
                        .add(&b)?;
                    featurizer.featurize(&b)
                })
            })
        })),
    }
}

#[tonic::async_trait]
impl Trainer for TrainerService {
    async fn open_partition(
        &self,
        request: Request<OpenPartitionRequest>,
    ) -> std::result::Result<Response<OpenPartitionResponse>, Status> {
        let req = request.into_inner();
        // The run's `[train] threads` is what its units use.
        let own = crate::device::trainer_threads();
        if let Some(own) = own.filter(|&own| own != req.threads as usize) {
            tracing::warn!(
                "the run's [train] threads = {} overrides this trainer's --threads {own} \
                 for its units; make them agree",
                req.threads
            );
        }
        let start = Instant::now();
        let mode = match req.cache() {
            hopper_proto::CacheMode::Memory => CacheMode::Memory,
            hopper_proto::CacheMode::Disk => CacheMode::Disk,
            hopper_proto::CacheMode::None => CacheMode::None,
        };
        let dir = tempfile::Builder::new()
            .prefix("hopper-trainer-")
            .tempdir()
            .map_err(|e| status(Error::Io(e)))?;
        let mut guard = self.opened.lock().await;
        // Drop an earlier partition (and its cache) before reading the new one.
        *guard = None;
        let (train, validation) = (slices(req.train)?, slices(req.validation)?);
        let train = PartitionData::open(train, mode, dir.path(), "train")
            .await
            .map_err(status)?;
        let validation = PartitionData::open(validation, mode, dir.path(), "validation")
            .await
            .map_err(status)?;
        let resp = OpenPartitionResponse {
            train_rows: train.rows,
            validation_rows: validation.rows,
            seconds: start.elapsed().as_secs_f64(),
            train_bytes: train.bytes,
            validation_bytes: validation.bytes,
            train_read: train.read.clone(),
            validation_read: validation.read.clone(),
        };
        tracing::info!(
            partition = req.partition,
            rows = train.rows,
            "partition open"
        );
        *guard = Some(Opened {
            index: req.partition,
            threads: req.threads,
            train,
            validation,
            _dir: dir,
        });
        Ok(Response::new(resp))
    }

    type TrainUnitStream = ReceiverStream<std::result::Result<TrainEvent, Status>>;

    async fn train_unit(
        &self,
        request: Request<TrainUnitRequest>,
    ) -> std::result::Result<Response<Self::TrainUnitStream>, Status> {
        let mut req = request.into_inner();
        let module = req.config.as_ref().and_then(|c| c.module().cloned());
        let config = model_config(req.config.take())?;
        let fresh = slices(std::mem::take(&mut req.train))?;
        // A model that arrives with its state is built before the unit
        // lock: the runner hands a trainer its next unit while it still
        // trains the one before (`Scheduler::queue_unit`), so decoding the
        // state overlaps that unit instead of following it. A fresh model is
        // built under the lock: initializing it draws from libtorch's global
        // generator, which must not move under a running unit.
        let state = match req.from.take() {
            Some(source) => self.held.obtain(source).await?,
            None => std::mem::take(&mut req.state),
        };
        let prebuilt = match state.is_empty() {
            true => None,
            false => {
                let (config, module) = (config.clone(), module.clone());
                let built = tokio::task::spawn_blocking(move || {
                    build_model(config, module.as_deref(), &state, 0)
                })
                .await
                .map_err(|e| Status::internal(format!("model state thread: {e}")))?
                .map_err(status)?;
                Some(built)
            }
        };
        // Held while the unit trains: one unit at a time per trainer.
        let mut guard = self.opened.clone().lock_owned().await;
        let opened = guard.as_mut().ok_or_else(|| {
            Status::failed_precondition("no partition open; call OpenPartition first")
        })?;
        let featurizer = Featurizer::new(&config);
        let f2 = featurizer.clone();
        let bytes = Arc::new(AtomicU64::new(0));
        let read = bytes.clone();
        let batches = opened
            .train
            .pass(&feature_key(&config.input), fresh, bytes, move |b| {
                f2.featurize(b)
            })
            .map_err(status)?;
        let checksum = batches.checksum();
        let threads = opened.threads;
        let (tx, rx) = mpsc::channel(16);
        let model_id = req.model;
        let partition = opened.index;
        let held = self.held.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = Some(guard);
            let progress_tx = tx.clone();
            let result = (|| -> Result<UnitResult> {
                crate::device::set_threads(threads as usize);
                let (mut model, mut opt) = match prebuilt {
                    Some(built) => built,
                    None => build_model(config.clone(), module.as_deref(), &[], req.seed)?,
                };
                let (epoch, partition) = (req.epoch as usize, partition as usize);
                crate::train::seed_unit(req.seed, epoch, partition);
                let start = Instant::now();
                let mut last = start;
                let metrics = train_partition(
                    &mut model,
                    &mut opt,
                    shuffled(
                        featurized_iter(batches, featurizer),
                        unit_seed(req.seed, epoch, partition),
                        WINDOW,
                    ),
                    config.batch_size,
                    |m: &crate::train::UnitMetrics| {
                        // A full channel drops the update: progress is advisory.
                        if last.elapsed().as_millis() < 250 {
                            return;
                        }
                        last = Instant::now();
                        let secs = start.elapsed().as_secs_f64().max(1e-9);
                        let _ = progress_tx.try_send(Ok(TrainEvent {
                            event: Some(train_event::Event::Progress(Progress {
                                samples: m.samples,
                                samples_per_second: m.samples as f64 / secs,
                            })),
                        }));
                    },
                )?;
                // The partition is free for the next unit while this one
                // encodes its state.
                drop(guard.take());
                let state = bytes::Bytes::from(model.to_state(&opt)?);
                // Kept before the result is sent: the runner may hand the
                // model's next unit to another trainer as soon as it has it.
                let state = match req.hold {
                    true => {
                        held.keep(model_id, req.version, state.clone());
                        match req.return_state {
                            true => state,
                            false => bytes::Bytes::new(),
                        }
                    }
                    false => state,
                };
                Ok(UnitResult {
                    state,
                    samples: metrics.samples,
                    loss_sum: metrics.loss_sum,
                    correct: metrics.correct,
                    scores: metrics.stats.scores.as_ref().map(Into::into),
                    regression: metrics.stats.regression.map(Into::into),
                    seconds: metrics.seconds,
                    wait_seconds: metrics.wait_seconds,
                    bytes_read: read.load(Ordering::Relaxed),
                    read: checksum.as_ref().and_then(figures),
                })
            })();
            let event = match result {
                Ok(r) => {
                    tracing::debug!(
                        model = model_id,
                        partition,
                        samples = r.samples,
                        "unit done"
                    );
                    Ok(TrainEvent {
                        event: Some(train_event::Event::Result(r)),
                    })
                }
                Err(e) => Err(status(e)),
            };
            let _ = tx.blocking_send(event);
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn evaluate(
        &self,
        request: Request<EvaluateRequest>,
    ) -> std::result::Result<Response<EvaluateResponse>, Status> {
        let mut req = request.into_inner();
        let module = req.config.as_ref().and_then(|c| c.module().cloned());
        let config = model_config(req.config.take())?;
        let fresh = slices(std::mem::take(&mut req.validation))?;
        let mut guard = self.opened.clone().lock_owned().await;
        let opened = guard.as_mut().ok_or_else(|| {
            Status::failed_precondition("no partition open; call OpenPartition first")
        })?;
        // Without rows opened or handed now (a runner plans validation per
        // evaluation where endpoints are read once), nothing to evaluate.
        if opened.validation.is_empty() && fresh.is_empty() {
            return Ok(Response::new(EvaluateResponse::default()));
        }
        let featurizer = Featurizer::new(&config);
        let f2 = featurizer.clone();
        let batches = opened
            .validation
            .pass(
                &feature_key(&config.input),
                fresh,
                Arc::default(),
                move |b| f2.featurize(b),
            )
            .map_err(status)?;
        let checksum = batches.checksum();
        let threads = opened.threads;
        let resp = tokio::task::spawn_blocking(move || -> Result<EvaluateResponse> {
            let _guard = guard;
            crate::device::set_threads(threads as usize);
            // The weights alone: evaluating builds no optimizer.
            let model = match req.state.is_empty() {
                true => build_model(config, module.as_deref(), &[], 0)?.0,
                false => Model::from_weights(config, module.as_deref(), &req.state)?,
            };
            let m = evaluate(&model, featurized_iter(batches, featurizer))?;
            Ok(EvaluateResponse {
                samples: m.samples,
                loss_sum: m.loss_sum,
                correct: m.correct,
                scores: m.stats.scores.as_ref().map(Into::into),
                regression: m.stats.regression.map(Into::into),
                read: checksum.as_ref().and_then(figures),
            })
        })
        .await
        .map_err(|e| Status::internal(format!("evaluation thread: {e}")))?
        .map_err(status)?;
        Ok(Response::new(resp))
    }

    async fn check_model(
        &self,
        request: Request<CheckModelRequest>,
    ) -> std::result::Result<Response<CheckModelResponse>, Status> {
        let mut req = request.into_inner();
        let module = req.config.as_ref().and_then(|c| c.module().cloned());
        let config = model_config(req.config.take())?;
        // Under the unit lock: building a model seeds libtorch's generator,
        // which must not move under a running unit.
        let guard = self.opened.clone().lock_owned().await;
        let parameters = tokio::task::spawn_blocking(move || -> Result<u64> {
            let _guard = guard;
            let (model, _opt) = build_model(config, module.as_deref(), &[], 0)?;
            Ok(model.parameter_count() as u64)
        })
        .await
        .map_err(|e| Status::internal(format!("model check thread: {e}")))?
        .map_err(status)?;
        Ok(Response::new(CheckModelResponse { parameters }))
    }

    type FetchStateStream = tokio_stream::Iter<std::vec::IntoIter<ChunkResult>>;

    async fn fetch_state(
        &self,
        request: Request<FetchStateRequest>,
    ) -> std::result::Result<Response<Self::FetchStateStream>, Status> {
        let key = request
            .into_inner()
            .key
            .ok_or_else(|| Status::invalid_argument("FetchState names no state (`key`)"))?;
        let state = self.held.get(&key).ok_or_else(|| {
            Status::not_found(format!(
                "this trainer keeps no state of {key} (it was restarted, or released it)"
            ))
        })?;
        // Chunks share the kept buffer; HTTP/2's window paces the sending.
        let chunks: Vec<_> = hopper_proto::hop::chunks(state)
            .into_iter()
            .map(Ok)
            .collect();
        Ok(Response::new(tokio_stream::iter(chunks)))
    }

    async fn release_states(
        &self,
        request: Request<ReleaseStatesRequest>,
    ) -> std::result::Result<Response<ReleaseStatesResponse>, Status> {
        self.held.release(&request.into_inner().keys);
        Ok(Response::new(ReleaseStatesResponse {}))
    }

    async fn health(
        &self,
        _request: Request<HealthRequest>,
    ) -> std::result::Result<Response<HealthResponse>, Status> {
        let (open, index) = match self.opened.try_lock() {
            Ok(g) => (g.is_some(), g.as_ref().map(|o| o.index).unwrap_or(0)),
            Err(_) => (true, 0), // busy training: certainly open
        };
        Ok(Response::new(HealthResponse {
            device: crate::device::describe(),
            threads: tch::get_num_threads() as u32,
            partition_open: open,
            partition: index,
            version: env!("CARGO_PKG_VERSION").to_string(),
        }))
    }
}

/// Serves a trainer on `listener` until `shutdown` completes, to the
/// callers `guard` admits (made before the trainer's address is told to
/// anyone: it takes no proof made before it).
///
/// With `tls`, the runner must dial `https://` and trust the certificate's
/// CA (and present a client certificate if `tls` names a client CA).
pub async fn serve(
    listener: TcpListener,
    tls: Option<tonic::transport::ServerTlsConfig>,
    guard: Guard,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let svc = TrainerServer::new(TrainerService::new())
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    let svc = InterceptedService::new(svc, guard);
    let shutdown: Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(shutdown);
    let mut builder = tonic::transport::Server::builder()
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW);
    if let Some(tls) = tls {
        builder = builder
            .tls_config(tls)
            .map_err(|e| Error::Config(format!("trainer TLS (--tls-cert, --tls-key): {e}")))?;
    }
    // No Nagle on the accepted connections (the builder's `tcp_nodelay`
    // applies only to listeners it binds itself): with it, the small frame
    // that ends a response (a unit's result, a state's last chunk, the
    // trailers) waited for the ACK of the data before it, which the peer
    // delays by up to 40 ms.
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    // grpc.health.v1, outside the guard: a probe holds no key.
    let health = crate::health::service().await;
    builder
        .add_service(health)
        .add_service(svc)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| Error::Trainer {
            trainer: "self".into(),
            message: format!("server stopped: {e}"),
        })
}
