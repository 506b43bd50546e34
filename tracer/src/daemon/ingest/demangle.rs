//! Itanium C++ demangling with a bound on the output: a traced process
//! chooses the names it looks kernels up by, and 245 bytes of nested
//! substitutions demangled to 54 MB in four seconds, for the annotator to
//! keep and write into every launch's line (`fuzz/`'s `ring_record` target
//! checks the bound).

use std::fmt;

use crate::format::line::intern::MAX_NAME_BYTES;

/// Demangles an Itanium C++ name. Other names, and names whose demangled
/// form would exceed [`MAX_NAME_BYTES`] (what the trace readers keep of a
/// name), come back unchanged.
pub fn demangle(raw: &str) -> String {
    let Ok(symbol) = cpp_demangle::Symbol::new(raw) else { return raw.to_string() };
    let mut out = Capped(String::new());
    match symbol.structured_demangle(&mut out, &cpp_demangle::DemangleOptions::default()) {
        Ok(()) => out.0,
        Err(fmt::Error) => raw.to_string(),
    }
}

/// A string that refuses to grow past [`MAX_NAME_BYTES`]: the refusal
/// stops the demangler at once, so its time is bounded with its output.
struct Capped(String);

impl fmt::Write for Capped {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.0.len() + s.len() > MAX_NAME_BYTES {
            return Err(fmt::Error);
        }
        self.0.push_str(s);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_that_explodes_stays_mangled() {
        // B<A, A>, then B<that, that> 21 times: 245 bytes (a ring record
        // holds 255) that demangled to 54 MB in 4 s. Each level's template
        // arguments are the substitution the level before made.
        let digits = "123456789ABCDEFGHIJKL";
        let mut name = String::from("_Z1f1A1BIS_S_E");
        for level in digits.chars() {
            name.push_str(&format!("S0_IS{level}_S{level}_E"));
        }
        assert_eq!(name.len(), 245);
        assert_eq!(demangle(&name), name);
        // Eight levels (3 KiB) fit the bound and are demangled.
        let short = &name[..14 + 11 * 7];
        let demangled = demangle(short);
        assert!(demangled.starts_with("f(A, B<A, A>, B<B<A, A>, B<A, A> >"), "{demangled}");
        assert_eq!(demangled.len(), 3287);
        assert_eq!(demangle("_Z11gemm_kernelILi128EfEvPKfi"), "void gemm_kernel<128, float>(float const*, int)");
    }
}
