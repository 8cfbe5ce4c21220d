//! An error shown with every cause behind it, for log lines: a module of its
//! own (rather than part of the logging set-up) so the use cases can use it
//! without depending on configuration or the subscriber.

/// Shows an error with every cause behind it (`a: b: c`), so a log line keeps
/// the driver's own words that a port error carries as its source.
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}
