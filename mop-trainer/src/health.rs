//! The standard gRPC health service (`grpc.health.v1.Health`, served by
//! `tonic-health`) beside the trainer service on the same port.
//!
//! A trainer is NOT_SERVING from its start until its device has run a
//! computation — a small tensor made, summed and read back on the device
//! models are built on (the first CUDA GPU, else the CPU) — and SERVING
//! from then on, so a probe tells a trainer whose libtorch cannot reach
//! its GPU from one that can take units. If the check fails, the trainer
//! stays NOT_SERVING and logs why. The answer is the same for the whole
//! server (`""`) and for the trainer service by name.
//!
//! The health service answers without the proof of the trainer key that
//! every trainer call needs: it tells only SERVING or NOT_SERVING, and a
//! probe holds no key. TLS and `--tls-client-ca` apply to it as to the
//! trainer service.

use hopper_proto::trainer_server::TrainerServer;
use tch::{Kind, Tensor};
use tonic::server::NamedService;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::ServingStatus;

use crate::service::TrainerService;

/// The health service of a trainer: NOT_SERVING now, SERVING once
/// [`device_ready`] has passed on a blocking thread.
pub async fn service() -> HealthServer<impl Health> {
    let (reporter, service) = tonic_health::server::health_reporter();
    let names = ["", <TrainerServer<TrainerService> as NamedService>::NAME];
    for name in names {
        reporter
            .set_service_status(name, ServingStatus::NotServing)
            .await;
    }
    tokio::spawn(async move {
        let ready = tokio::task::spawn_blocking(device_ready)
            .await
            .unwrap_or_else(|e| Err(format!("the device check did not finish: {e}")));
        match ready {
            Ok(()) => {
                tracing::info!(device = %crate::device::describe(), "health: SERVING");
                for name in names {
                    reporter
                        .set_service_status(name, ServingStatus::Serving)
                        .await;
                }
            }
            Err(why) => tracing::error!("health: NOT_SERVING: {why}"),
        }
    });
    service
}

/// Whether the device models are built on computes: a tensor made there,
/// summed, and read back.
pub fn device_ready() -> Result<(), String> {
    let device = crate::device::default_device();
    let fail = |e: tch::TchError| format!("device {}: {e}", crate::device::describe());
    let ones = Tensor::f_ones([4, 4], (Kind::Float, device)).map_err(fail)?;
    let sum = ones.f_sum(Kind::Float).map_err(fail)?;
    let value = sum.f_double_value(&[]).map_err(fail)?;
    if value != 16.0 {
        return Err(format!(
            "device {}: 16 ones summed to {value}",
            crate::device::describe()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_device_of_this_build_computes() {
        assert_eq!(super::device_ready(), Ok(()));
    }
}
