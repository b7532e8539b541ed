//! The exact minimiser of one L2-penalised, sample-weighted binary logistic loss: the problem
//! scikit-learn's `SGDClassifier(loss="log_loss", penalty="l2")` approximates by SGD.
//!
//! For rows `x_i`, targets `t_i ∈ {-1, +1}` and sample weights `s_i`, it minimises
//!
//! ```text
//! J(w, b) = (1/n) Σ_i s_i log(1 + exp(-t_i (w·x_i + b))) + (α/2) |w|²
//! ```
//!
//! (the intercept `b` is not penalised, as in sklearn). `J` is smooth and, for `α > 0` and both
//! signs present, strictly convex with a unique minimiser, so a full-batch quasi-Newton method
//! finds it to any precision and the result does not depend on a random seed, on the order of
//! the rows or on the number of threads (partial sums are taken over fixed row chunks and added
//! in chunk order).
//!
//! Two things make it fast without changing the answer:
//! * the rows are centred on their (unweighted) mean `μ` internally: `w·x + b = w·(x - μ) + b'`
//!   with `b' = b + w·μ`, and the penalty only involves `w`, so this is an exact
//!   reparametrisation of the same problem. CLIP embeddings share a large common direction;
//!   removing it makes the problem far better conditioned for L-BFGS.
//! * L-BFGS (10 pairs) with a backtracking Armijo line search, stopping at a gradient
//!   max-norm of [`GRAD_TOL`]; the work per iteration is two passes over the data.

use rayon::prelude::*;

/// Stop when every gradient component is below this (the loss is an average, so gradients are
/// O(1) at the start).
pub(crate) const GRAD_TOL: f64 = 1e-9;
/// Iteration cap; a well-posed problem stops far earlier.
const MAX_ITER: usize = 20_000;
/// L-BFGS history length.
const MEMORY: usize = 10;
/// Rows per partial sum (a fixed chunking keeps the sums identical on any thread count).
const CHUNK: usize = 512;

/// One binary problem: rows, ±1 targets, per-row weights, and the penalty α.
pub(crate) struct Binary<'a, R> {
    pub(crate) rows: &'a [R],
    pub(crate) targets: &'a [f64],
    pub(crate) weights: &'a [f64],
    pub(crate) alpha: f64,
}

/// The minimiser in the original coordinates, and how the solver ended.
#[derive(Debug, Clone)]
pub(crate) struct Solution {
    pub(crate) coef: Vec<f64>,
    pub(crate) intercept: f64,
    pub(crate) iterations: usize,
    /// Max-norm of the gradient at the solution.
    pub(crate) grad_norm: f64,
}

/// `log(1 + exp(m))` without overflow.
fn softplus(m: f64) -> f64 {
    if m > 0.0 {
        m + (-m).exp().ln_1p()
    } else {
        m.exp().ln_1p()
    }
}

/// `1 / (1 + exp(-m))` without overflow.
fn sigmoid(m: f64) -> f64 {
    if m >= 0.0 {
        1.0 / (1.0 + (-m).exp())
    } else {
        let e = m.exp();
        e / (1.0 + e)
    }
}

fn dot_f64(a: &[f64], x: &[f32]) -> f64 {
    a.iter().zip(x).map(|(w, &v)| w * v as f64).sum()
}

impl<R: AsRef<[f32]> + Sync> Binary<'_, R> {
    /// `J` and its gradient at `theta = [w (centred coordinates), b']`.
    fn value_grad(&self, theta: &[f64], mean: &[f64], grad: &mut [f64]) -> f64 {
        let d = mean.len();
        let (w, b) = (&theta[..d], theta[d]);
        // w·(x - μ) + b' = w·x + c
        let c = b - w.iter().zip(mean).map(|(a, m)| a * m).sum::<f64>();
        let n = self.rows.len();
        let parts: Vec<(f64, f64, Vec<f64>)> = (0..n.div_ceil(CHUNK))
            .into_par_iter()
            .map(|k| {
                let mut loss = 0.0;
                let mut gsum = 0.0;
                let mut g = vec![0.0; d];
                for i in k * CHUNK..((k + 1) * CHUNK).min(n) {
                    let x = self.rows[i].as_ref();
                    let z = dot_f64(w, x) + c;
                    let m = -self.targets[i] * z;
                    loss += self.weights[i] * softplus(m);
                    // d/dz of s log(1 + exp(-t z)) = -t s σ(-t z)
                    let gz = -self.targets[i] * self.weights[i] * sigmoid(m);
                    gsum += gz;
                    for (gk, &xk) in g.iter_mut().zip(x) {
                        *gk += gz * xk as f64;
                    }
                }
                (loss, gsum, g)
            })
            .collect();
        let inv_n = 1.0 / n as f64;
        let (mut loss, mut gsum) = (0.0, 0.0);
        grad.iter_mut().for_each(|g| *g = 0.0);
        for (l, s, g) in parts {
            loss += l;
            gsum += s;
            for (a, b) in grad[..d].iter_mut().zip(&g) {
                *a += b;
            }
        }
        // Σ gz (x - μ) = Σ gz x - μ Σ gz
        for k in 0..d {
            grad[k] = (grad[k] - mean[k] * gsum) * inv_n + self.alpha * w[k];
        }
        grad[d] = gsum * inv_n;
        loss * inv_n + 0.5 * self.alpha * w.iter().map(|a| a * a).sum::<f64>()
    }

    /// Minimises `J` (see the module docs). Rows must be non-empty and share one dimension.
    pub(crate) fn solve(&self) -> Solution {
        let n = self.rows.len();
        let d = self.rows[0].as_ref().len();
        let mut mean = vec![0.0; d];
        for r in self.rows {
            for (m, &x) in mean.iter_mut().zip(r.as_ref()) {
                *m += x as f64;
            }
        }
        mean.iter_mut().for_each(|m| *m /= n as f64);

        let dim = d + 1;
        let mut theta = vec![0.0; dim];
        let mut grad = vec![0.0; dim];
        let mut f = self.value_grad(&theta, &mean, &mut grad);
        let mut hist: std::collections::VecDeque<(Vec<f64>, Vec<f64>, f64)> =
            std::collections::VecDeque::with_capacity(MEMORY);
        let mut new_grad = vec![0.0; dim];
        let mut trial = vec![0.0; dim];
        let mut iterations = 0;
        let max_abs = |g: &[f64]| g.iter().fold(0.0f64, |a, b| a.max(b.abs()));
        while iterations < MAX_ITER && max_abs(&grad) > GRAD_TOL {
            iterations += 1;
            // two-loop recursion: dir = -H grad
            let mut q = grad.clone();
            let mut alphas = Vec::with_capacity(hist.len());
            for (s, y, rho) in hist.iter().rev() {
                let a = rho * dotv(s, &q);
                axpy(-a, y, &mut q);
                alphas.push(a);
            }
            let gamma = match hist.back() {
                Some((s, y, _)) => dotv(s, y) / dotv(y, y),
                None => 1.0 / max_abs(&grad).max(1.0),
            };
            q.iter_mut().for_each(|v| *v *= gamma);
            for ((s, y, rho), a) in hist.iter().zip(alphas.iter().rev()) {
                let b = rho * dotv(y, &q);
                axpy(a - b, s, &mut q);
            }
            let mut dir: Vec<f64> = q.iter().map(|v| -v).collect();
            let mut slope = dotv(&grad, &dir);
            if slope >= 0.0 {
                // not a descent direction (rounding): restart from steepest descent
                hist.clear();
                dir = grad.iter().map(|g| -g / max_abs(&grad).max(1.0)).collect();
                slope = dotv(&grad, &dir);
            }
            // backtracking Armijo line search
            let mut step = 1.0;
            let mut accepted = None;
            for _ in 0..60 {
                for k in 0..dim {
                    trial[k] = theta[k] + step * dir[k];
                }
                let ft = self.value_grad(&trial, &mean, &mut new_grad);
                if ft <= f + 1e-4 * step * slope {
                    accepted = Some(ft);
                    break;
                }
                step *= 0.5;
            }
            let Some(ft) = accepted else {
                // no decrease representable in f64: at the minimum to machine precision
                break;
            };
            let s: Vec<f64> = trial.iter().zip(&theta).map(|(a, b)| a - b).collect();
            let y: Vec<f64> = new_grad.iter().zip(&grad).map(|(a, b)| a - b).collect();
            let sy = dotv(&s, &y);
            if sy > 1e-16 * dotv(&s, &s).sqrt() * dotv(&y, &y).sqrt() && sy > 0.0 {
                if hist.len() == MEMORY {
                    hist.pop_front();
                }
                hist.push_back((s, y, 1.0 / sy));
            }
            std::mem::swap(&mut theta, &mut trial);
            std::mem::swap(&mut grad, &mut new_grad);
            f = ft;
        }
        let coef = theta[..d].to_vec();
        let intercept = theta[d] - coef.iter().zip(&mean).map(|(a, m)| a * m).sum::<f64>();
        Solution {
            coef,
            intercept,
            iterations,
            grad_norm: max_abs(&grad),
        }
    }
}

fn dotv(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn axpy(a: f64, x: &[f64], y: &mut [f64]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += a * xi;
    }
}
