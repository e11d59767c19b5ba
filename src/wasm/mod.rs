//! The browser surface (feature `wasm`, target wasm32): the GPU engine behind wasm-bindgen.
//!
//! JS (`www/flint.js`) fetches and caches the files, then hands them over part by part with
//! [`ModelLoader`] (a GGUF, or a safetensors folder), which uploads each layer to the GPU as it
//! arrives so the whole model is never in wasm memory. Generation is an async
//! loop: each token's readback is awaited on the event loop, so a page (or a worker's message
//! handler, which is where an abort arrives) stays responsive between tokens.

mod loader;
mod model;

pub use loader::ModelLoader;
pub use model::Model;

use crate::gpu::{Backend, Gpu};
use std::sync::Arc;
use wasm_bindgen::prelude::*;

/// A flint error as a JS `Error` whose message names the problem.
pub(crate) fn js_error(e: crate::Error) -> JsError {
    JsError::new(&e.to_string())
}

/// The browser's WebGPU device, shared by the models loaded on it.
#[wasm_bindgen]
pub struct Engine {
    gpu: Arc<Gpu>,
}

#[wasm_bindgen]
impl Engine {
    /// Opens the browser's WebGPU adapter with its own limits. Fails with a message that says
    /// so when the browser has no WebGPU.
    pub async fn open() -> Result<Engine, JsError> {
        install_panic_hook();
        let gpu = Gpu::new(Backend::Auto).await.map_err(js_error)?;
        // Errors no scope catches are logged, never a panic that would abort the module: the
        // scopes around loading (`Model.ready`) turn the ones that matter into load errors.
        gpu.device.on_uncaptured_error(Arc::new(|e| {
            web_sys::console::error_1(&format!("flint: WebGPU error: {e}").into());
        }));
        // The engine's API shares the device through Arc; the browser build has one thread.
        #[allow(clippy::arc_with_non_send_sync)]
        Ok(Engine { gpu: Arc::new(gpu) })
    }

    /// The adapter's name, backend, features and the limits flint depends on.
    #[wasm_bindgen(getter)]
    pub fn adapter(&self) -> JsValue {
        let (info, l) = (&self.gpu.info, &self.gpu.limits);
        let value = serde_json::json!({
            "name": if info.name.is_empty() { "WebGPU adapter".to_string() } else { info.name.clone() },
            "backend": format!("{:?}", info.backend),
            "deviceType": format!("{:?}", info.device_type),
            "driver": info.driver,
            "features": format!("{:?}", self.gpu.features),
            "limits": {
                "maxBufferSize": l.max_buffer_size,
                "maxStorageBufferBindingSize": l.max_storage_buffer_binding_size,
                "maxComputeWorkgroupStorageSize": l.max_compute_workgroup_storage_size,
                "maxComputeInvocationsPerWorkgroup": l.max_compute_invocations_per_workgroup,
                "maxStorageBuffersPerShaderStage": l.max_storage_buffers_per_shader_stage,
            },
        });
        to_js(&value)
    }
}

/// A JSON value as a plain JS object.
pub(crate) fn to_js(value: &serde_json::Value) -> JsValue {
    let serializer = serde_wasm_bindgen::Serializer::json_compatible();
    serde::Serialize::serialize(value, &serializer).unwrap_or(JsValue::NULL)
}

/// Panics (bugs, never bad input) are printed to the console with their message instead of an
/// opaque "unreachable executed".
fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            web_sys::console::error_1(&format!("flint panicked: {info}").into());
        }));
    });
}
