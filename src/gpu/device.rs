//! Adapter and device selection, the device's limits and features, buffers, and compiled
//! kernels (cached by name and constants, so asking twice costs nothing).

use crate::{Error, Result};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use wgpu::util::DeviceExt;

/// Which native API to ask wgpu for; `Auto` lets wgpu choose (WebGPU in the browser).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(all(feature = "cli", not(target_arch = "wasm32")), derive(clap::ValueEnum))]
pub enum Backend {
    #[default]
    Auto,
    Vulkan,
    Metal,
    Dx12,
    Gl,
}

impl Backend {
    fn backends(self) -> wgpu::Backends {
        match self {
            Backend::Auto => wgpu::Backends::all(),
            Backend::Vulkan => wgpu::Backends::VULKAN,
            Backend::Metal => wgpu::Backends::METAL,
            Backend::Dx12 => wgpu::Backends::DX12,
            Backend::Gl => wgpu::Backends::GL,
        }
    }
}

/// A compiled compute kernel: its pipeline and its bind group layout (auto-derived from the WGSL).
pub struct Kernel {
    pub name: String,
    pub pipeline: Arc<wgpu::ComputePipeline>,
    pub layout: wgpu::BindGroupLayout,
}

/// The device flint computes on.
pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    pub features: wgpu::Features,
    kernels: Mutex<HashMap<String, Arc<Kernel>>>,
    /// In the browser, compile results arrive on the event loop: they wait here until
    /// [`Gpu::compile_errors`] is awaited.
    #[cfg(target_arch = "wasm32")]
    pending_compiles: Mutex<Vec<(String, CompileResult)>>,
    /// Accounting: bytes of the buffers created here (less those this type frees itself), their
    /// peak, and the times the host waited for the device.
    allocated: AtomicU64,
    peak: AtomicU64,
    waits: AtomicU64,
}

#[cfg(target_arch = "wasm32")]
type CompileResult = std::pin::Pin<Box<dyn std::future::Future<Output = Option<wgpu::Error>>>>;

/// The optional features flint uses when offered; every kernel also works without them.
const WANTED_FEATURES: wgpu::Features =
    wgpu::Features::SHADER_F16.union(wgpu::Features::SUBGROUP).union(wgpu::Features::TIMESTAMP_QUERY);

impl Gpu {
    /// Opens the first adapter of `backend` with the adapter's own limits and the wanted
    /// features it offers.
    pub async fn new(backend: Backend) -> Result<Gpu> {
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
        desc.backends = backend.backends();
        let instance = wgpu::Instance::new(desc);
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                force_fallback_adapter: false,
                compatible_surface: None,
                apply_limit_buckets: false,
            })
            .await
            .map_err(|e| {
                Error::Gpu(format!(
                    "no {backend:?} GPU adapter found ({e}); on Linux without a GPU, install Mesa's lavapipe \
                     (apt-get install mesa-vulkan-drivers libvulkan1)"
                ))
            })?;
        let limits = adapter.limits();
        let features = adapter.features() & WANTED_FEATURES;
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("flint"),
                required_features: features,
                required_limits: limits.clone(),
                experimental_features: wgpu::ExperimentalFeatures::disabled(),
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await
            .map_err(|e| Error::Gpu(format!("cannot open the device: {e}")))?;
        Ok(Gpu {
            device,
            queue,
            info: adapter.get_info(),
            limits,
            features,
            kernels: Mutex::new(HashMap::new()),
            #[cfg(target_arch = "wasm32")]
            pending_compiles: Mutex::new(Vec::new()),
            allocated: AtomicU64::new(0),
            peak: AtomicU64::new(0),
            waits: AtomicU64::new(0),
        })
    }

    /// `Gpu::new` for native callers.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new_blocking(backend: Backend) -> Result<Gpu> {
        pollster::block_on(Self::new(backend))
    }

    /// Bytes of the buffers created through this `Gpu` so far (every flint buffer is: weights,
    /// caches, activations, parameters), less the temporary ones it freed itself. A model's
    /// buffers live as long as the model, so with one model this is what the device holds for it.
    pub fn allocated_bytes(&self) -> u64 {
        self.allocated.load(Ordering::Relaxed)
    }

    /// The most [`Gpu::allocated_bytes`] has been.
    pub fn peak_bytes(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }

    /// How many times the host has waited for the device (readbacks).
    pub fn host_waits(&self) -> u64 {
        self.waits.load(Ordering::Relaxed)
    }

    /// Frees a buffer made by this `Gpu` now (wgpu frees it once the work using it is done), and
    /// takes it off the allocation count.
    pub fn free(&self, buffer: wgpu::Buffer) {
        self.allocated.fetch_sub(buffer.size(), Ordering::Relaxed);
        buffer.destroy();
    }

    fn track(&self, bytes: u64) {
        let now = self.allocated.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }

    /// A buffer the host maps to read what a copy put there.
    pub fn readback_buffer(&self, label: &str, bytes: u64) -> wgpu::Buffer {
        self.track(bytes);
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    /// The largest buffer one binding may cover (128 MiB on lavapipe and many phones).
    pub fn max_binding_bytes(&self) -> u64 {
        self.limits.max_storage_buffer_binding_size.min(self.limits.max_buffer_size)
    }

    /// Compiles the WGSL `source` (entry point `main`) with pipeline-overridable `constants`,
    /// or returns the cached kernel of the same name and constants.
    pub fn kernel(&self, name: &str, source: &str, constants: &[(&str, f64)]) -> Result<Arc<Kernel>> {
        let key = format!("{name}{constants:?}");
        if let Some(k) = self.kernels.lock().expect("kernel cache").get(&key) {
            return Ok(k.clone());
        }
        let source = super::shaders::expand(source)?;
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = self.device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(name),
            source: wgpu::ShaderSource::Wgsl(source.into()),
        });
        let pipeline = self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(name),
            layout: None,
            module: &module,
            entry_point: Some("main"),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants,
                zero_initialize_workgroup_memory: false,
            },
            cache: None,
        });
        let compiled = scope.pop();
        // Natively the result is ready: a kernel that does not compile is an error here. The
        // browser reports it on the event loop, which cannot be blocked on: see compile_errors.
        #[cfg(not(target_arch = "wasm32"))]
        if let Some(e) = pollster::block_on(compiled) {
            return Err(Error::Gpu(format!("kernel {name} does not compile: {e}")));
        }
        #[cfg(target_arch = "wasm32")]
        self.pending_compiles.lock().expect("compile list").push((name.to_string(), Box::pin(compiled)));
        let layout = pipeline.get_bind_group_layout(0);
        let kernel = Arc::new(Kernel { name: name.to_string(), pipeline: Arc::new(pipeline), layout });
        self.kernels.lock().expect("kernel cache").insert(key, kernel.clone());
        Ok(kernel)
    }

    /// An op dispatching `kernel` with `buffers` bound at bindings 0, 1, 2, ... of group 0.
    pub fn op(
        &self,
        label: &'static str,
        kernel: &Kernel,
        buffers: &[&wgpu::Buffer],
        workgroups: [u32; 3],
    ) -> super::Op {
        let entries: Vec<wgpu::BindGroupEntry> = buffers
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry { binding: i as u32, resource: b.as_entire_binding() })
            .collect();
        let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(label),
            layout: &kernel.layout,
            entries: &entries,
        });
        super::Op { label, pipeline: kernel.pipeline.clone(), bind_group, workgroups, weight_bytes: 0 }
    }

    /// A storage buffer holding `data` (also a copy source and destination).
    pub fn storage<T: bytemuck::Pod>(&self, label: &str, data: &[T]) -> wgpu::Buffer {
        let bytes: &[u8] = bytemuck::cast_slice(data);
        // wgpu rejects zero-sized bindings; keep at least one word.
        let contents: &[u8] = if bytes.is_empty() { &[0; 4] } else { bytes };
        self.track(contents.len().next_multiple_of(4) as u64);
        self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
        })
    }

    /// A zero-filled storage buffer of `bytes` bytes (at least 4).
    pub fn storage_zeroed(&self, label: &str, bytes: u64) -> wgpu::Buffer {
        let size = bytes.max(4).next_multiple_of(4);
        self.track(size);
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    /// A uniform buffer holding `data` (kernel parameters fixed when an op is built).
    pub fn uniform<T: bytemuck::Pod>(&self, label: &str, data: &T) -> wgpu::Buffer {
        self.track(std::mem::size_of::<T>().next_multiple_of(4) as u64);
        self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: bytemuck::bytes_of(data),
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        })
    }

    /// Copies `buffer` back to the host and waits for it (tests, logits, token ids).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read<T: bytemuck::Pod>(&self, buffer: &wgpu::Buffer) -> Result<Vec<T>> {
        pollster::block_on(self.read_async(buffer))
    }

    /// Copies `buffer` back to the host. In the browser the map completes on the event loop,
    /// so this must be awaited there, never blocked on.
    pub async fn read_async<T: bytemuck::Pod>(&self, buffer: &wgpu::Buffer) -> Result<Vec<T>> {
        let size = buffer.size();
        let staging = self.readback_buffer("readback", size);
        let mut encoder =
            self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("readback") });
        encoder.copy_buffer_to_buffer(buffer, 0, &staging, 0, size);
        let index = self.queue.submit([encoder.finish()]);
        let data = self.map_and_read_async(&staging, index).await;
        drop(staging);
        self.allocated.fetch_sub(size, Ordering::Relaxed);
        data
    }

    /// Maps a MAP_READ buffer once submission `index` (which fills it) is done, waiting for
    /// that submission only, and copies its contents out.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn map_and_read<T: bytemuck::Pod>(
        &self,
        staging: &wgpu::Buffer,
        index: wgpu::SubmissionIndex,
    ) -> Result<Vec<T>> {
        pollster::block_on(self.map_and_read_async(staging, index))
    }

    /// [`Gpu::map_and_read`] for async callers: natively the device is polled until `index`
    /// is done (the map callback has then run); in the browser the callback arrives from the
    /// event loop while this future waits.
    pub async fn map_and_read_async<T: bytemuck::Pod>(
        &self,
        staging: &wgpu::Buffer,
        index: wgpu::SubmissionIndex,
    ) -> Result<Vec<T>> {
        self.waits.fetch_add(1, Ordering::Relaxed);
        let slice = staging.slice(..);
        let (tx, rx) = futures_channel::oneshot::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.device
            .poll(wgpu::PollType::Wait { submission_index: Some(index), timeout: None })
            .map_err(|e| Error::Gpu(format!("device lost: {e}")))?;
        rx.await
            .map_err(|_| Error::Gpu("readback callback never ran".into()))?
            .map_err(|e| Error::Gpu(format!("cannot map a readback buffer: {e}")))?;
        let data = {
            let view =
                slice.get_mapped_range().map_err(|e| Error::Gpu(format!("cannot read a mapped buffer: {e:?}")))?;
            bytemuck::pod_collect_to_vec(&view)
        };
        staging.unmap();
        Ok(data)
    }

    /// The first kernel, compiled since the last call, that did not compile. Natively always
    /// `Ok` (`kernel` already failed); in the browser a model is usable only after this.
    pub async fn compile_errors(&self) -> Result<()> {
        #[cfg(target_arch = "wasm32")]
        {
            let pending = std::mem::take(&mut *self.pending_compiles.lock().expect("compile list"));
            for (name, compiled) in pending {
                if let Some(e) = compiled.await {
                    return Err(Error::Gpu(format!("kernel {name} does not compile: {e}")));
                }
            }
        }
        Ok(())
    }

    /// A one-line description: adapter name, backend, device type.
    pub fn describe(&self) -> String {
        format!("{} ({:?}, {:?})", self.info.name, self.info.backend, self.info.device_type)
    }
}
