// sincos.wgsl — included by the RoPE kernels (rope.wgsl, mla_rope.wgsl): cos and sin of large
// angles to a few ulps (see rope.wgsl's header for why not the builtins). Declares nothing the
// includer must provide.

// 2/pi, and pi/2 = P1 + P2 + P3 + P4 to about 2^-54: P1..P3 have at most 8 significant bits,
// so kf * Pn is exact for integers kf < 2^16; P4 is the rest rounded to f32.
const TWO_OVER_PI: f32 = 0.636619772;
const P1: f32 = 1.5703125;
const P2: f32 = 4.825592041e-4;
const P3: f32 = 1.266598701e-6;
const P4: f32 = 9.920936295e-10;

// (cos x, sin x) for x >= 0.
fn sincos(x: f32) -> vec2<f32> {
    let kf = floor(x * TWO_OVER_PI + 0.5);
    let r = ((x - kf * P1) - kf * P2 - kf * P3) - kf * P4;
    let r2 = r * r;
    // Taylor series; |r| <= pi/4 (+ a rounding), truncation error below 3e-9.
    let s = r + r * r2 * (-1.0 / 6.0 + r2 * (1.0 / 120.0 + r2 * (-1.0 / 5040.0 + r2 * (1.0 / 362880.0))));
    let c = 1.0 + r2 * (-0.5 + r2 * (1.0 / 24.0 + r2 * (-1.0 / 720.0 + r2 * (1.0 / 40320.0 + r2 * (-1.0 / 3628800.0)))));
    switch (u32(kf) & 3u) {
        case 0u: { return vec2<f32>(c, s); }
        case 1u: { return vec2<f32>(-s, c); }
        case 2u: { return vec2<f32>(-c, -s); }
        default: { return vec2<f32>(s, -c); }
    }
}

