//! libyaml's event parser, driven directly to measure nesting depth before a document is
//! parsed for real (see `spec::limits`). The unsafe calls live here, in `sys`, with the others.

use std::mem::MaybeUninit;

use unsafe_libyaml_norway as unsafe_yaml;

/// The position (1-based line and column) where `text` first opens a mapping or sequence
/// deeper than `limit`, or `None` if it never does (or is not valid YAML before that point).
///
/// This runs libyaml's own event parser and stops at the first event past the limit, so the
/// depth measured is exactly the one the real parse would build: no second grammar to keep in
/// step with YAML's quoting and indentation rules. libyaml's cost per token grows with the
/// current flow depth (its simple-key stack); stopping at `limit` keeps the whole check linear
/// in the size of the text (the scanner looks ahead at most about 1024 characters on a line).
/// JSON is YAML here: the same events, the same depth.
pub(crate) fn first_too_deep(text: &[u8], limit: usize) -> Option<(u64, u64)> {
    let mut parser = EventParser::new(text);
    let mut depth = 0usize;
    loop {
        let (kind, line, column) = parser.next()?;
        match kind {
            unsafe_yaml::YAML_SEQUENCE_START_EVENT | unsafe_yaml::YAML_MAPPING_START_EVENT => {
                depth += 1;
                if depth > limit {
                    return Some((line + 1, column + 1));
                }
            }
            unsafe_yaml::YAML_SEQUENCE_END_EVENT | unsafe_yaml::YAML_MAPPING_END_EVENT => {
                depth = depth.saturating_sub(1);
            }
            unsafe_yaml::YAML_STREAM_END_EVENT => return None,
            _ => {}
        }
    }
}

/// A libyaml parser over a borrowed string, yielding only each event's kind and start mark.
struct EventParser<'a> {
    /// Boxed: libyaml keeps a pointer to the parser inside itself (its read handler's data),
    /// so the struct must not move after `yaml_parser_set_input_string`.
    sys: Box<MaybeUninit<unsafe_yaml::yaml_parser_t>>,
    _input: std::marker::PhantomData<&'a [u8]>,
}

impl<'a> EventParser<'a> {
    fn new(input: &'a [u8]) -> Self {
        let mut sys = Box::new(MaybeUninit::<unsafe_yaml::yaml_parser_t>::uninit());
        let parser = sys.as_mut_ptr();
        // SAFETY: `parser` points to writable, boxed (never moved) memory of the right type;
        // initialize zeroes it and allocates its buffers (it only fails if malloc fails, which
        // aborts in Rust's allocator anyway). The input outlives the parser through `'a`.
        unsafe {
            if unsafe_yaml::yaml_parser_initialize(parser).fail {
                std::process::abort();
            }
            unsafe_yaml::yaml_parser_set_encoding(parser, unsafe_yaml::YAML_UTF8_ENCODING);
            unsafe_yaml::yaml_parser_set_input_string(parser, input.as_ptr(), input.len() as u64);
        }
        Self { sys, _input: std::marker::PhantomData }
    }

    /// The next event's kind and 0-based start line and column; `None` on a parse error (the
    /// caller must not ask again after `None` or after the stream's end).
    fn next(&mut self) -> Option<(unsafe_yaml::yaml_event_type_t, u64, u64)> {
        let parser = self.sys.as_mut_ptr();
        let mut event = MaybeUninit::<unsafe_yaml::yaml_event_t>::uninit();
        // SAFETY: the parser was initialized in `new` and is only used from `&mut self`. Its
        // only caller stops at the first error or at the end of the stream, so a parser in an
        // error state is never asked for more events. A parsed event is read, then freed once.
        unsafe {
            let event = event.as_mut_ptr();
            if unsafe_yaml::yaml_parser_parse(parser, event).fail {
                return None;
            }
            let out = ((*event).type_, (*event).start_mark.line, (*event).start_mark.column);
            unsafe_yaml::yaml_event_delete(event);
            Some(out)
        }
    }
}

impl Drop for EventParser<'_> {
    fn drop(&mut self) {
        // SAFETY: initialized in `new`, deleted exactly once here.
        unsafe { unsafe_yaml::yaml_parser_delete(self.sys.as_mut_ptr()) }
    }
}
