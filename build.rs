//! Checks, before anything is compiled, that a `*-system` GEMM backend's
//! library is installed, and stops with what to install if it is not; and
//! that at most one backend is chosen. Without a backend feature it does
//! nothing.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let backends: Vec<&str> = [
        "openblas-system",
        "openblas-static",
        "netlib",
        "intel-mkl-static",
        "intel-mkl-system",
        "blis",
        "accelerate",
    ]
    .into_iter()
    .filter(|name| {
        let var = format!("CARGO_FEATURE_{}", name.to_uppercase().replace('-', "_"));
        std::env::var_os(var).is_some()
    })
    .collect();
    if backends.len() > 1 {
        // lib.rs has a compile_error! for this too; stopping here first
        // avoids a confusing link error from two BLAS libraries.
        panic!(
            "\n\ngemmconv: the GEMM backend features {backends:?} are on together; enable \
             exactly one, or none for the pure-Rust GEMM.\n"
        );
    } else {
        #[cfg(any(feature = "openblas-system", feature = "intel-mkl-system"))]
        check_system_library(backends.first().copied());
    }
}

#[cfg(any(feature = "openblas-system", feature = "intel-mkl-system"))]
fn check_system_library(backend: Option<&str>) {
    let (package, install) = match backend {
        Some("openblas-system") => (
            "openblas",
            "apt-get install libopenblas-dev pkg-config (Debian/Ubuntu), \
             dnf install openblas-devel pkgconf (Fedora), brew install openblas pkg-config (macOS)",
        ),
        Some("intel-mkl-system") => (
            "mkl-dynamic-lp64-seq",
            "Intel oneMKL with its pkg-config files (apt-get install intel-oneapi-mkl-devel, \
             then source setvars.sh)",
        ),
        _ => return,
    };
    if let Err(error) = pkg_config::Config::new()
        .cargo_metadata(false)
        .probe(package)
    {
        panic!(
            "\n\ngemmconv: the feature `{}` links the system's {package}, which pkg-config \
             cannot find:\n  {error}\n\nInstall it: {install}\n\
             Or build without a BLAS feature: the default pure-Rust GEMM needs nothing installed.\n",
            backend.unwrap_or_default()
        );
    }
}
