//! ttrpc round trip between wharfd's shim client and a task service, over a unix socket: what
//! every task call (State, Kill, Wait set-up, …) costs before the shim does any work. The server
//! is the real ttrpc server stack with a Task service answering State.

use std::sync::Arc;

use containerd_shim_protos::api;
use containerd_shim_protos::shim_async::{create_task, Task};
use containerd_shim_protos::ttrpc::r#async::TtrpcContext;
use criterion::{criterion_group, criterion_main, Criterion};
use wharf_runtime::Shim;

struct Answering;

#[async_trait::async_trait]
impl Task for Answering {
    async fn connect(
        &self,
        _ctx: &TtrpcContext,
        _req: api::ConnectRequest,
    ) -> ttrpc::Result<api::ConnectResponse> {
        Ok(api::ConnectResponse::default())
    }

    async fn state(
        &self,
        _ctx: &TtrpcContext,
        req: api::StateRequest,
    ) -> ttrpc::Result<api::StateResponse> {
        Ok(api::StateResponse {
            id: req.id,
            pid: 42,
            ..Default::default()
        })
    }
}

fn round_trip(c: &mut Criterion) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("runtime: {e}"),
    };
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("tempdir: {e}"),
    };
    let sock = dir.path().join("task.sock");
    let addr = format!("unix://{}", sock.display());
    let shim = rt.block_on(async {
        let mut services = create_task(Arc::new(Answering));
        // Serve under both names, as wharf's shim does.
        let names: Vec<String> = services.keys().cloned().collect();
        for n in names {
            if let Some(s) = services.remove(&n) {
                services.insert("containerd.task.v2.Task".to_string(), s);
            }
        }
        let mut server = match ttrpc::asynchronous::Server::new().bind(&addr) {
            Ok(s) => s.register_service(services),
            Err(e) => panic!("bind: {e}"),
        };
        if let Err(e) = server.start().await {
            panic!("start: {e}");
        }
        std::mem::forget(server);
        match Shim::connect(&addr, "bench", "t1", dir.path().to_path_buf()).await {
            Ok(s) => s,
            Err(e) => panic!("connect: {e}"),
        }
    });
    c.bench_function("ttrpc/task-state-round-trip", |b| {
        b.iter(|| {
            let st = rt.block_on(shim.state(""));
            assert!(matches!(st, Ok(ref s) if s.pid == 42));
        })
    });
}

criterion_group!(benches, round_trip);
criterion_main!(benches);
