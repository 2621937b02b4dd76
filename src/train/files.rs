//! Data files: CSV (plain or gzip), NumPy `.npy` and safetensors, read into CPU
//! tensors.
//!
//! Each loader returns `(features, targets)` as they are in the file, `[n, ...]` and
//! `[n]` or `[n, k]`, in whatever numeric kind the file holds; [`super::data`] then
//! flattens and converts them and checks labels, counts and finiteness. What is
//! checked here is the format: every problem is a [`DataError`] naming the spec
//! field (`data.path`, `validation.data.target`, ...) and the file, with the line
//! and column for CSV. No content, however malformed, makes these functions panic,
//! and none of them reads more than the data-set size limit into memory.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use tch::{Kind, Tensor};

use super::data::error::{DataError, MAX_FEATURE_VALUES};
use crate::domain::spec::{ColumnRef, CsvSpec, SafetensorsSpec};

/// The first two bytes of every gzip stream.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// The first six bytes of every `.npy` file.
const NPY_MAGIC: &[u8; 6] = b"\x93NUMPY";

/// Longest `.npy` header accepted (NumPy itself writes a few hundred bytes at most).
const MAX_NPY_HEADER: usize = 1 << 20;

/// Largest safetensors file read: room for the largest feature tensor in `f64` and
/// its targets.
const MAX_SAFETENSORS_BYTES: u64 = 4 << 30;

/// Column names shown in an error before the list is cut short.
const NAMES_SHOWN: usize = 20;

/// Loads a CSV file, plain or gzip-compressed (recognised by its first bytes, not
/// its name): one example per row, every cell a number. The target is the column
/// `spec.target` names (by header name or 0-based index), the last column when it
/// names none; all other columns are features. With `spec.header` the first row
/// names the columns. Blank lines are skipped.
///
/// Returns `[rows, columns - 1]` `f32` features and `[rows]` `f64` targets.
pub fn load_csv(spec: &CsvSpec, path: &Path, field: &str) -> Result<(Tensor, Tensor), DataError> {
    let shown = path.display();
    let at_path =
        |reason: String| DataError::new(format!("{field}.path"), format!("{shown}: {reason}"));
    let at_target =
        |reason: String| DataError::new(format!("{field}.target"), format!("{shown}: {reason}"));
    let delimiter = u8::try_from(spec.delimiter)
        .ok()
        .filter(|d| d.is_ascii() && !matches!(d, b'"' | b'\n' | b'\r'))
        .ok_or_else(|| {
            DataError::new(
                format!("{field}.delimiter"),
                "must be one ASCII character other than a quote or a newline",
            )
        })?;
    if matches!(spec.target, Some(ColumnRef::Name(_))) && !spec.header {
        return Err(DataError::new(
            format!("{field}.target"),
            "a column name needs `header: true`",
        ));
    }
    let (input, gzip) = open_csv(path).map_err(|e| at_path(format!("cannot read: {e}")))?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(delimiter)
        .trim(csv::Trim::All)
        .from_reader(input);

    let limit = usize::try_from(MAX_FEATURE_VALUES).unwrap_or(usize::MAX);
    let mut record = csv::ByteRecord::new();
    let mut names: Option<Vec<String>> = None;
    // Fields per row, the line that set it, and the target column.
    let mut layout: Option<(usize, u64, usize)> = None;
    let mut features: Vec<f32> = Vec::new();
    let mut targets: Vec<f64> = Vec::new();
    loop {
        match reader.read_byte_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => return Err(at_path(csv_failure(&e, gzip))),
        }
        if record.len() == 1 && record.get(0).is_some_and(<[u8]>::is_empty) {
            continue; // a blank line, or one of spaces
        }
        let line = record.position().map_or(0, csv::Position::line);
        if spec.header && names.is_none() {
            names = Some(
                record
                    .iter()
                    .map(|name| String::from_utf8_lossy(name).into_owned())
                    .collect(),
            );
        }
        let (width, first_line, target) = match layout {
            Some(layout) => layout,
            None => {
                let width = record.len();
                if width < 2 {
                    return Err(at_path(format!(
                        "line {line}: one column only; need a target column and at least one feature"
                    )));
                }
                let target = target_column(spec.target.as_ref(), names.as_deref(), width)
                    .map_err(&at_target)?;
                layout = Some((width, line, target));
                if spec.header {
                    continue; // the header row holds names, not values
                }
                (width, line, target)
            }
        };
        if record.len() != width {
            return Err(at_path(format!(
                "line {line}: {} fields, but line {first_line} has {width}",
                record.len()
            )));
        }
        if features.len() + width > limit {
            return Err(at_path(format!(
                "more than {MAX_FEATURE_VALUES} feature values, the limit for a data set"
            )));
        }
        for (column, cell) in record.iter().enumerate() {
            let bad = |problem: String| {
                let name = names
                    .as_ref()
                    .and_then(|n| n.get(column))
                    .map(|n| format!(", `{n}`"))
                    .unwrap_or_default();
                at_path(format!(
                    "line {line}, column {} (index {column}{name}): {problem}",
                    column + 1
                ))
            };
            let value = parse_number(cell).map_err(&bad)?;
            if column == target {
                targets.push(value);
            } else {
                let narrow = value as f32;
                if !narrow.is_finite() {
                    return Err(bad(format!(
                        "`{}` is beyond the range of a 32-bit float",
                        shorten(cell)
                    )));
                }
                features.push(narrow);
            }
        }
    }
    let Some((width, _, _)) = layout else {
        return Err(at_path("holds no row".into()));
    };
    if targets.is_empty() {
        return Err(at_path("holds a header row but no data row".into()));
    }
    let torch = |e: tch::TchError| DataError::new(field, format!("{shown}: torch: {e}"));
    let rows = i64::try_from(targets.len()).map_err(|_| at_path("too many rows".into()))?;
    let columns = i64::try_from(width - 1).map_err(|_| at_path("too many columns".into()))?;
    let features = Tensor::f_from_slice(&features)
        .and_then(|t| t.f_reshape([rows, columns]))
        .map_err(torch)?;
    let targets = Tensor::f_from_slice(&targets).map_err(torch)?;
    Ok((features, targets))
}

/// Opens a file, decompressing it when it starts with the gzip magic bytes; the flag
/// says whether it did.
fn open_csv(path: &Path) -> std::io::Result<(Box<dyn Read>, bool)> {
    let mut file = BufReader::new(File::open(path)?);
    let gzip = file.fill_buf()?.starts_with(&GZIP_MAGIC);
    if gzip {
        Ok((Box::new(flate2::bufread::MultiGzDecoder::new(file)), true))
    } else {
        Ok((Box::new(file), false))
    }
}

/// Describes a failure of the CSV reader (an I/O or decompression error, as the
/// reader is flexible and reads bytes).
fn csv_failure(e: &csv::Error, gzip: bool) -> String {
    let at = e
        .position()
        .map(|p| format!("line {}: ", p.line()))
        .unwrap_or_default();
    match e.kind() {
        csv::ErrorKind::Io(io) if gzip => {
            format!("{at}cannot decompress (damaged gzip data?): {io}")
        }
        csv::ErrorKind::Io(io) => format!("{at}cannot read: {io}"),
        _ => format!("{at}{e}"),
    }
}

/// The 0-based index of the target column in rows of `width` fields.
fn target_column(
    target: Option<&ColumnRef>,
    names: Option<&[String]>,
    width: usize,
) -> Result<usize, String> {
    match target {
        None => Ok(width - 1),
        Some(ColumnRef::Index(index)) => {
            let index = usize::try_from(*index).unwrap_or(usize::MAX);
            if index < width {
                Ok(index)
            } else {
                Err(format!(
                    "no column {index}: the file has {width} columns (indexes 0 to {})",
                    width - 1
                ))
            }
        }
        Some(ColumnRef::Name(name)) => {
            let Some(names) = names else {
                return Err("a column name needs `header: true`".into());
            };
            let found: Vec<usize> = names
                .iter()
                .enumerate()
                .filter(|(_, n)| *n == name)
                .map(|(i, _)| i)
                .collect();
            match found.as_slice() {
                [index] => Ok(*index),
                [] => Err(format!(
                    "no column named `{name}` (columns: {})",
                    list_names(names.iter().map(String::as_str))
                )),
                several => Err(format!(
                    "{} columns are named `{name}` (indexes {}); give the target by index",
                    several.len(),
                    several
                        .iter()
                        .map(usize::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            }
        }
    }
}

/// Names joined for a message, cut short after [`NAMES_SHOWN`].
fn list_names<'a>(names: impl ExactSizeIterator<Item = &'a str>) -> String {
    let count = names.len();
    let mut shown: Vec<&str> = names.take(NAMES_SHOWN).collect();
    if shown.is_empty() {
        return "none".into();
    }
    if count > NAMES_SHOWN {
        shown.push("...");
        return format!("{} ({count} in all)", shown.join(", "));
    }
    shown.join(", ")
}

/// A finite number from a CSV cell, or what is wrong with it.
fn parse_number(cell: &[u8]) -> Result<f64, String> {
    if cell.is_empty() {
        return Err("empty cell, expected a number".into());
    }
    let text = std::str::from_utf8(cell).ok();
    match text.map(str::parse::<f64>) {
        Some(Ok(value)) if value.is_finite() => Ok(value),
        Some(Ok(_)) => Err(format!("`{}` is not a finite number", shorten(cell))),
        _ => Err(format!("`{}` is not a number", shorten(cell))),
    }
}

/// A cell's text for a message, at most 40 characters.
fn shorten(cell: &[u8]) -> String {
    let text = String::from_utf8_lossy(cell);
    if text.chars().count() <= 40 {
        return text.into_owned();
    }
    let mut short: String = text.chars().take(40).collect();
    short.push_str("...");
    short
}

/// Loads features and targets from two NumPy `.npy` files (format versions 1.0, 2.0
/// and 3.0, C order, little-endian `f2 f4 f8 i1 i2 i4 i8 u1 u2 u4 u8 b1`). Unsigned
/// 16, 32 and 64-bit values are widened to `i32`, `i64` and `i64`. Problems are
/// reported against `{field}.features` or `{field}.targets`.
pub fn load_npy(
    features: &Path,
    targets: &Path,
    field: &str,
) -> Result<(Tensor, Tensor), DataError> {
    let at = |name: &str, path: &Path, reason: String| {
        DataError::new(
            format!("{field}.{name}"),
            format!("{}: {reason}", path.display()),
        )
    };
    let xs = read_npy(features, MAX_FEATURE_VALUES).map_err(|r| at("features", features, r))?;
    let ys = read_npy(targets, MAX_FEATURE_VALUES).map_err(|r| at("targets", targets, r))?;
    check_pair(&xs, &ys, &features.display().to_string()).map_err(|(name, reason)| {
        let path = if name == "features" {
            features
        } else {
            targets
        };
        at(name, path, reason)
    })?;
    Ok((xs, ys))
}

/// Both tensors have an example axis, of the same length. The error names the
/// offending tensor (`features` or `targets`).
fn check_pair(
    xs: &Tensor,
    ys: &Tensor,
    features_source: &str,
) -> Result<(), (&'static str, String)> {
    let (Some(&n), Some(&m)) = (xs.size().first(), ys.size().first()) else {
        let name = if xs.dim() == 0 { "features" } else { "targets" };
        return Err((
            name,
            "a single value (shape ()); need one entry per example".into(),
        ));
    };
    if n != m {
        return Err((
            "targets",
            format!("{m} targets, but the features ({features_source}) hold {n} examples"),
        ));
    }
    Ok(())
}

/// How the values of a `.npy` file become a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NpyType {
    /// Copied as they are.
    Direct(Kind),
    /// `b1`: copied, every non-zero byte made 1.
    Bool,
    /// `u2`, widened to `i32`.
    U16,
    /// `u4`, widened to `i64`.
    U32,
    /// `u8`, to `i64` (values above `i64::MAX` refused).
    U64,
}

impl NpyType {
    fn size(self) -> u64 {
        match self {
            NpyType::Direct(kind) => kind.elt_size_in_bytes() as u64,
            NpyType::Bool => 1,
            NpyType::U16 => 2,
            NpyType::U32 => 4,
            NpyType::U64 => 8,
        }
    }
}

/// The parsed header of a `.npy` file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NpyHeader {
    descr: String,
    fortran_order: bool,
    shape: Vec<u64>,
}

/// Reads a `.npy` file holding at most `limit` values; the error is a reason without
/// the path.
fn read_npy(path: &Path, limit: i64) -> Result<Tensor, String> {
    let mut file = File::open(path).map_err(|e| format!("cannot read: {e}"))?;
    let file_len = file
        .metadata()
        .map_err(|e| format!("cannot read: {e}"))?
        .len();
    let too_short = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            "too short to be a .npy file".to_string()
        } else {
            format!("cannot read: {e}")
        }
    };
    let mut preamble = [0u8; 8];
    file.read_exact(&mut preamble).map_err(too_short)?;
    if &preamble[..6] != NPY_MAGIC {
        return Err("not a .npy file (it does not start with \\x93NUMPY)".into());
    }
    let (major, minor) = (preamble[6], preamble[7]);
    let header_len = match major {
        1 => {
            let mut len = [0u8; 2];
            file.read_exact(&mut len).map_err(too_short)?;
            usize::from(u16::from_le_bytes(len))
        }
        2 | 3 => {
            let mut len = [0u8; 4];
            file.read_exact(&mut len).map_err(too_short)?;
            usize::try_from(u32::from_le_bytes(len)).unwrap_or(usize::MAX)
        }
        _ => {
            return Err(format!(
                "unsupported .npy format version {major}.{minor} (1.0 to 3.0 are read)"
            ))
        }
    };
    if header_len > MAX_NPY_HEADER {
        return Err(format!(
            "a header of {header_len} bytes, too long for a .npy file"
        ));
    }
    let mut header = vec![0u8; header_len];
    file.read_exact(&mut header)
        .map_err(|_| "the file ends inside its header".to_string())?;
    let header = parse_npy_header(&header).map_err(|e| format!("malformed header: {e}"))?;
    let kind = npy_type(&header.descr)?;
    if header.fortran_order {
        return Err(
            "the array is in Fortran order, which is not supported; save a C-ordered copy \
             (np.save(path, np.ascontiguousarray(a)))"
                .into(),
        );
    }
    let shape_text = format!("{:?}", header.shape);
    let values = header
        .shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .filter(|&v| v <= u64::try_from(limit).unwrap_or(0))
        .ok_or_else(|| {
            format!("shape {shape_text} holds more than {limit} values, the limit for a data set")
        })?;
    let shape: Vec<i64> = header
        .shape
        .iter()
        .map(|&d| i64::try_from(d))
        .collect::<Result<_, _>>()
        .map_err(|_| format!("shape {shape_text} has a dimension too large"))?;
    let needed = values * kind.size();
    let header_end = if major == 1 { 10 } else { 12 } + header_len as u64;
    let present = file_len.saturating_sub(header_end);
    if present < needed {
        return Err(format!(
            "truncated: shape {shape_text} of `{}` needs {needed} bytes of data, the file holds {present}",
            header.descr
        ));
    }
    if present > needed {
        return Err(format!(
            "{} bytes after the data that shape {shape_text} of `{}` needs ({needed} bytes)",
            present - needed,
            header.descr
        ));
    }
    let mut data = Vec::with_capacity(usize::try_from(needed).unwrap_or(0));
    file.take(needed)
        .read_to_end(&mut data)
        .map_err(|e| format!("cannot read: {e}"))?;
    if data.len() as u64 != needed {
        return Err("the file changed while it was read".into());
    }
    npy_tensor(data, &shape, kind).map_err(|e| format!("torch: {e}"))
}

/// Makes the tensor from the raw little-endian data of a `.npy` file.
fn npy_tensor(mut data: Vec<u8>, shape: &[i64], kind: NpyType) -> Result<Tensor, String> {
    let torch = |e: tch::TchError| e.to_string();
    match kind {
        NpyType::Direct(kind) => Tensor::f_from_data_size(&data, shape, kind).map_err(torch),
        NpyType::Bool => {
            for byte in &mut data {
                *byte = u8::from(*byte != 0);
            }
            Tensor::f_from_data_size(&data, shape, Kind::Bool).map_err(torch)
        }
        NpyType::U16 => {
            let values: Vec<i32> = data
                .chunks_exact(2)
                .map(|c| i32::from(u16::from_le_bytes([c[0], c[1]])))
                .collect();
            Tensor::f_from_slice(&values)
                .and_then(|t| t.f_reshape(shape))
                .map_err(torch)
        }
        NpyType::U32 => {
            let values: Vec<i64> = data
                .chunks_exact(4)
                .map(|c| i64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                .collect();
            Tensor::f_from_slice(&values)
                .and_then(|t| t.f_reshape(shape))
                .map_err(torch)
        }
        NpyType::U64 => {
            let values: Vec<i64> = data
                .chunks_exact(8)
                .map(|c| {
                    let v = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
                    i64::try_from(v)
                        .map_err(|_| format!("the value {v} is too large (above {})", i64::MAX))
                })
                .collect::<Result<_, _>>()?;
            Tensor::f_from_slice(&values)
                .and_then(|t| t.f_reshape(shape))
                .map_err(torch)
        }
    }
}

/// The tensor kind for a `.npy` type descriptor such as `<f4` or `|u1`.
fn npy_type(descr: &str) -> Result<NpyType, String> {
    let (order, code) = match descr.as_bytes().first() {
        Some(b'<' | b'>' | b'|' | b'=') => descr.split_at(1),
        _ => ("", descr),
    };
    let kind = match code {
        "f2" => NpyType::Direct(Kind::Half),
        "f4" => NpyType::Direct(Kind::Float),
        "f8" => NpyType::Direct(Kind::Double),
        "i1" => NpyType::Direct(Kind::Int8),
        "i2" => NpyType::Direct(Kind::Int16),
        "i4" => NpyType::Direct(Kind::Int),
        "i8" => NpyType::Direct(Kind::Int64),
        "u1" => NpyType::Direct(Kind::Uint8),
        "b1" => NpyType::Bool,
        "u2" => NpyType::U16,
        "u4" => NpyType::U32,
        "u8" => NpyType::U64,
        _ => {
            return Err(format!(
                "the type `{descr}` is not supported (little-endian f2, f4, f8, i1, i2, i4, i8, u1, u2, u4, u8 and b1 are)"
            ))
        }
    };
    let little = order == "<" || (matches!(order, "=" | "") && cfg!(target_endian = "little"));
    if kind.size() > 1 && !little {
        if order == ">" || order == "=" || order.is_empty() {
            return Err(format!(
                "big-endian data (`{descr}`) is not supported; save it little-endian \
                 (np.save(path, a.astype('<{code}')))"
            ));
        }
        return Err(format!("`{descr}` is not a valid type descriptor"));
    }
    Ok(kind)
}

/// A value of the Python literal that is a `.npy` header.
#[derive(Debug, Clone, PartialEq)]
enum PyValue {
    Str(String),
    Int(u64),
    Bool(bool),
    None,
    Seq(Vec<PyValue>),
    Dict(Vec<(String, PyValue)>),
}

/// Parses the header dictionary, e.g.
/// `{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }`.
fn parse_npy_header(bytes: &[u8]) -> Result<NpyHeader, String> {
    let mut parser = PyParser { s: bytes, pos: 0 };
    let value = parser.value(0)?;
    parser.skip_space();
    if parser.pos != bytes.len() {
        return Err(format!(
            "unexpected text after the dictionary at byte {}",
            parser.pos
        ));
    }
    let PyValue::Dict(entries) = value else {
        return Err("not a dictionary".into());
    };
    let get = |key: &str| entries.iter().find(|(k, _)| k == key).map(|(_, v)| v);
    let descr = match get("descr") {
        Some(PyValue::Str(descr)) => descr.clone(),
        Some(_) => return Err("structured types (a list as 'descr') are not supported".into()),
        None => return Err("no 'descr'".into()),
    };
    let fortran_order = match get("fortran_order") {
        Some(PyValue::Bool(b)) => *b,
        Some(_) => return Err("'fortran_order' is not True or False".into()),
        None => return Err("no 'fortran_order'".into()),
    };
    let shape = match get("shape") {
        Some(PyValue::Seq(dims)) => dims
            .iter()
            .map(|d| match d {
                PyValue::Int(d) => Ok(*d),
                _ => Err("'shape' holds something other than whole numbers".to_string()),
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err("'shape' is not a tuple".into()),
        None => return Err("no 'shape'".into()),
    };
    Ok(NpyHeader {
        descr,
        fortran_order,
        shape,
    })
}

/// A recursive-descent parser for the Python literals found in `.npy` headers:
/// strings, whole numbers, `True`, `False`, `None`, tuples, lists and dictionaries.
struct PyParser<'a> {
    s: &'a [u8],
    pos: usize,
}

impl PyParser<'_> {
    /// Deepest nesting accepted.
    const MAX_DEPTH: u32 = 16;

    fn skip_space(&mut self) {
        while self.s.get(self.pos).is_some_and(u8::is_ascii_whitespace) {
            self.pos += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_space();
        self.s.get(self.pos).copied()
    }

    fn eat(&mut self, byte: u8) -> bool {
        if self.peek() == Some(byte) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn unexpected(&self) -> String {
        match self.s.get(self.pos) {
            Some(b) => format!(
                "unexpected `{}` at byte {}",
                char::from(*b).escape_default(),
                self.pos
            ),
            None => "it ends too early".into(),
        }
    }

    fn value(&mut self, depth: u32) -> Result<PyValue, String> {
        if depth > Self::MAX_DEPTH {
            return Err("nested too deeply".into());
        }
        match self.peek() {
            Some(quote @ (b'\'' | b'"')) => self.string(quote).map(PyValue::Str),
            Some(b'(') => self.seq(b')', depth).map(PyValue::Seq),
            Some(b'[') => self.seq(b']', depth).map(PyValue::Seq),
            Some(b'{') => self.dict(depth),
            Some(b) if b.is_ascii_digit() => self.int(),
            Some(b) if b.is_ascii_alphabetic() => {
                let start = self.pos;
                while self.s.get(self.pos).is_some_and(u8::is_ascii_alphanumeric) {
                    self.pos += 1;
                }
                match &self.s[start..self.pos] {
                    b"True" => Ok(PyValue::Bool(true)),
                    b"False" => Ok(PyValue::Bool(false)),
                    b"None" => Ok(PyValue::None),
                    word => Err(format!("unknown name `{}`", String::from_utf8_lossy(word))),
                }
            }
            _ => Err(self.unexpected()),
        }
    }

    fn string(&mut self, quote: u8) -> Result<String, String> {
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            match self.s.get(self.pos) {
                None => return Err("a string is not closed".into()),
                Some(&b) if b == quote => {
                    self.pos += 1;
                    return Ok(String::from_utf8_lossy(&out).into_owned());
                }
                Some(b'\\') => {
                    if let Some(&escaped) = self.s.get(self.pos + 1) {
                        out.push(escaped);
                    }
                    self.pos += 2;
                }
                Some(&b) => {
                    out.push(b);
                    self.pos += 1;
                }
            }
        }
    }

    fn int(&mut self) -> Result<PyValue, String> {
        let start = self.pos;
        while self.s.get(self.pos).is_some_and(u8::is_ascii_digit) {
            self.pos += 1;
        }
        let digits = String::from_utf8_lossy(&self.s[start..self.pos]).into_owned();
        // Python 2 wrote long integers with an `L`.
        if matches!(self.s.get(self.pos), Some(b'L' | b'l')) {
            self.pos += 1;
        }
        digits
            .parse::<u64>()
            .map(PyValue::Int)
            .map_err(|_| format!("the number {digits} is too large"))
    }

    fn seq(&mut self, close: u8, depth: u32) -> Result<Vec<PyValue>, String> {
        self.pos += 1;
        let mut items = Vec::new();
        loop {
            if self.eat(close) {
                return Ok(items);
            }
            items.push(self.value(depth + 1)?);
            if self.eat(b',') {
                continue;
            }
            if self.eat(close) {
                return Ok(items);
            }
            return Err(self.unexpected());
        }
    }

    fn dict(&mut self, depth: u32) -> Result<PyValue, String> {
        self.pos += 1;
        let mut entries = Vec::new();
        loop {
            if self.eat(b'}') {
                return Ok(PyValue::Dict(entries));
            }
            let PyValue::Str(key) = self.value(depth + 1)? else {
                return Err("a dictionary key is not a string".into());
            };
            if !self.eat(b':') {
                return Err(self.unexpected());
            }
            let value = self.value(depth + 1)?;
            entries.push((key, value));
            if self.eat(b',') {
                continue;
            }
            if self.eat(b'}') {
                return Ok(PyValue::Dict(entries));
            }
            return Err(self.unexpected());
        }
    }
}

/// Loads the tensors `spec.features` and `spec.targets` of a safetensors file (any
/// kind torch reads: floats, signed integers, `u8`, `bool`). A missing tensor is
/// reported against `{field}.features` or `{field}.targets` with the names present;
/// an unreadable or malformed file against `{field}.path`.
pub fn load_safetensors(
    spec: &SafetensorsSpec,
    path: &Path,
    field: &str,
) -> Result<(Tensor, Tensor), DataError> {
    let shown = path.display();
    let at = |name: &str, reason: String| {
        DataError::new(format!("{field}.{name}"), format!("{shown}: {reason}"))
    };
    let size = std::fs::metadata(path)
        .map_err(|e| at("path", format!("cannot read: {e}")))?
        .len();
    if size > MAX_SAFETENSORS_BYTES {
        return Err(at(
            "path",
            format!("{size} bytes, more than the {MAX_SAFETENSORS_BYTES} read for a data set"),
        ));
    }
    let mut tensors = Tensor::read_safetensors(path).map_err(|e| {
        let reason = match e {
            tch::TchError::SafeTensorError { err, .. } => {
                format!("not a valid safetensors file: {err}")
            }
            other => format!("cannot load: {other}"),
        };
        at("path", reason)
    })?;
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let names = || {
        if tensors.is_empty() {
            "the file holds none".to_string()
        } else {
            format!(
                "tensors: {}",
                list_names(tensors.iter().map(|(n, _)| n.as_str()))
            )
        }
    };
    let find = |name: &str, which: &str| -> Result<Tensor, DataError> {
        tensors
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.shallow_clone())
            .ok_or_else(|| at(which, format!("no tensor named `{name}` ({})", names())))
    };
    let xs = find(&spec.features, "features")?;
    let ys = find(&spec.targets, "targets")?;
    check_pair(&xs, &ys, &format!("tensor `{}`", spec.features)).map_err(|(which, reason)| {
        let name = if which == "features" {
            &spec.features
        } else {
            &spec.targets
        };
        at(which, format!("tensor `{name}`: {reason}"))
    })?;
    Ok((xs, ys))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn csv_spec(header: bool, target: Option<ColumnRef>) -> CsvSpec {
        CsvSpec {
            path: "unused".into(),
            header,
            target,
            delimiter: ',',
        }
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, bytes).expect("write");
        path
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(bytes).expect("compress");
        encoder.finish().expect("compress")
    }

    fn values(t: &Tensor) -> Vec<f64> {
        Vec::<f64>::try_from(t.to_kind(Kind::Double).flatten(0, -1)).expect("values")
    }

    #[test]
    fn csv_with_a_header_takes_the_target_by_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write(dir.path(), "d.csv", b"a,label,b\n1,0,2\n3,1,4.5\n");
        let spec = csv_spec(true, Some(ColumnRef::Name("label".into())));
        let (x, y) = load_csv(&spec, &path, "data").expect("load");
        assert_eq!(x.size(), [2, 2]);
        assert_eq!(x.kind(), Kind::Float);
        assert_eq!(values(&x), [1.0, 2.0, 3.0, 4.5]);
        assert_eq!(values(&y), [0.0, 1.0]);

        let spec = csv_spec(true, Some(ColumnRef::Name("class".into())));
        let err = load_csv(&spec, &path, "validation.data").expect_err("no such column");
        assert_eq!(err.field, "validation.data.target");
        assert!(err.reason.contains(&path.display().to_string()), "{err}");
        assert!(
            err.reason
                .contains("no column named `class` (columns: a, label, b)"),
            "{err}"
        );
    }

    #[test]
    fn csv_takes_the_target_by_index() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write(dir.path(), "d.csv", b"7, 1, 2\n8 ,3,4\n");
        let (x, y) =
            load_csv(&csv_spec(false, Some(ColumnRef::Index(0))), &path, "data").expect("load");
        assert_eq!(x.size(), [2, 2]);
        assert_eq!(values(&x), [1.0, 2.0, 3.0, 4.0]);
        assert_eq!(values(&y), [7.0, 8.0]);

        let err = load_csv(&csv_spec(false, Some(ColumnRef::Index(3))), &path, "data")
            .expect_err("range");
        assert_eq!(err.field, "data.target");
        assert!(
            err.reason.contains("no column 3: the file has 3 columns"),
            "{err}"
        );
    }

    #[test]
    fn csv_defaults_to_the_last_column_and_skips_blank_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write(
            dir.path(),
            "d.csv",
            b"1,2,0\r\n\r\n3,4,1\r\n5,6,2\n\n  \n\n",
        );
        let (x, y) = load_csv(&csv_spec(false, None), &path, "data").expect("load");
        assert_eq!(x.size(), [3, 2]);
        assert_eq!(values(&x), [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(values(&y), [0.0, 1.0, 2.0]);
    }

    #[test]
    fn csv_uses_the_delimiter() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write(dir.path(), "d.tsv", b"x\ty\tt\n1\t2\t1\n");
        let mut spec = csv_spec(true, Some(ColumnRef::Name("t".into())));
        spec.delimiter = '\t';
        let (x, y) = load_csv(&spec, &path, "data").expect("load");
        assert_eq!(values(&x), [1.0, 2.0]);
        assert_eq!(values(&y), [1.0]);
        spec.delimiter = 'é';
        let err = load_csv(&spec, &path, "data").expect_err("not ascii");
        assert_eq!(err.field, "data.delimiter");
    }

    #[test]
    fn csv_gzip_is_recognised_by_its_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let packed = gzip(b"c1,c2,t\n1,2,0\n3,4,1\n");
        // Named without `.gz`: the magic bytes decide.
        for name in ["d.csv.gz", "d.csv"] {
            let path = write(dir.path(), name, &packed);
            let (x, y) = load_csv(&csv_spec(true, None), &path, "data").expect("load");
            assert_eq!(values(&x), [1.0, 2.0, 3.0, 4.0]);
            assert_eq!(values(&y), [0.0, 1.0]);
        }
        // Plain text named `.gz` is read as it is.
        let path = write(dir.path(), "plain.gz", b"1,2,0\n");
        let (x, _) = load_csv(&csv_spec(false, None), &path, "data").expect("plain");
        assert_eq!(x.size(), [1, 2]);
        // A damaged stream is an error, not a panic.
        let mut damaged = packed.clone();
        damaged.truncate(packed.len() / 2);
        let path = write(dir.path(), "damaged.csv.gz", &damaged);
        let err = load_csv(&csv_spec(true, None), &path, "data").expect_err("damaged");
        assert_eq!(err.field, "data.path");
        let mut garbled = packed;
        for byte in garbled.iter_mut().skip(12) {
            *byte ^= 0x5a;
        }
        let path = write(dir.path(), "garbled.csv.gz", &garbled);
        let err = load_csv(&csv_spec(true, None), &path, "data").expect_err("garbled");
        assert_eq!(err.field, "data.path");
    }

    #[test]
    fn csv_names_the_line_and_column_of_a_bad_cell() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write(dir.path(), "d.csv", b"a,b,t\n1,2,0\n3,abc,1\n");
        let err = load_csv(&csv_spec(true, None), &path, "data").expect_err("abc");
        assert_eq!(err.field, "data.path");
        assert!(err.reason.starts_with(&path.display().to_string()), "{err}");
        assert!(
            err.reason
                .contains("line 3, column 2 (index 1, `b`): `abc` is not a number"),
            "{err}"
        );

        let path = write(dir.path(), "e.csv", b"1,,0\n");
        let err = load_csv(&csv_spec(false, None), &path, "data").expect_err("empty");
        assert!(
            err.reason
                .contains("line 1, column 2 (index 1): empty cell"),
            "{err}"
        );

        let path = write(dir.path(), "r.csv", b"1,2,0\n1e300,2,0\n");
        let err = load_csv(&csv_spec(false, None), &path, "data").expect_err("range");
        assert!(
            err.reason
                .contains("line 2, column 1 (index 0): `1e300` is beyond"),
            "{err}"
        );

        let path = write(dir.path(), "n.csv", b"1,2,0\n1,NaN,0\n");
        let err = load_csv(&csv_spec(false, None), &path, "data").expect_err("nan");
        assert!(
            err.reason
                .contains("line 2, column 2 (index 1): `NaN` is not a finite number"),
            "{err}"
        );
    }

    #[test]
    fn csv_rows_must_have_the_same_width() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write(dir.path(), "d.csv", b"1,2,0\n3,4,1\n5,1\n");
        let err = load_csv(&csv_spec(false, None), &path, "data").expect_err("ragged");
        assert_eq!(err.field, "data.path");
        assert!(
            err.reason.contains("line 3: 2 fields, but line 1 has 3"),
            "{err}"
        );
    }

    #[test]
    fn csv_without_rows_or_features_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, bytes, header, expected) in [
            ("empty.csv", &b""[..], false, "holds no row"),
            ("header.csv", b"a,b\n", true, "no data row"),
            ("one.csv", b"1\n2\n", false, "one column only"),
        ] {
            let path = write(dir.path(), name, bytes);
            let err = load_csv(&csv_spec(header, None), &path, "data").expect_err(name);
            assert_eq!(err.field, "data.path");
            assert!(err.reason.contains(expected), "{err}");
        }
    }

    #[test]
    fn csv_missing_file_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("absent.csv");
        let err = load_csv(&csv_spec(false, None), &path, "data").expect_err("missing");
        assert_eq!(err.field, "data.path");
        assert!(err.reason.contains("absent.csv: cannot read"), "{err}");
    }

    /// A `.npy` file as NumPy writes it, with a version 1.0, 2.0 or 3.0 header. A `descr`
    /// starting with `[` (a structured type) is written as a list, not a string.
    fn npy(descr: &str, shape: &str, data: &[u8], version: u8) -> Vec<u8> {
        let descr = if descr.starts_with('[') {
            descr.to_string()
        } else {
            format!("'{descr}'")
        };
        let mut header =
            format!("{{'descr': {descr}, 'fortran_order': False, 'shape': {shape}, }}");
        let prefix = if version == 1 { 10 } else { 12 };
        while (prefix + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut out = NPY_MAGIC.to_vec();
        out.extend([version, 0]);
        if version == 1 {
            out.extend((header.len() as u16).to_le_bytes());
        } else {
            out.extend((header.len() as u32).to_le_bytes());
        }
        out.extend(header.as_bytes());
        out.extend(data);
        out
    }

    fn f32_bytes(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    #[test]
    fn npy_round_trips_float_features_and_integer_labels() {
        let dir = tempfile::tempdir().expect("tempdir");
        let xs = write(
            dir.path(),
            "x.npy",
            &npy(
                "<f4",
                "(3, 2)",
                &f32_bytes(&[1.0, 2.0, 3.0, 4.0, 5.0, -6.5]),
                1,
            ),
        );
        let labels: Vec<u8> = [0i64, 2, 1].iter().flat_map(|v| v.to_le_bytes()).collect();
        let ys = write(dir.path(), "y.npy", &npy("<i8", "(3,)", &labels, 3));
        let (x, y) = load_npy(&xs, &ys, "data").expect("load");
        assert_eq!((x.size(), x.kind()), (vec![3, 2], Kind::Float));
        assert_eq!(values(&x), [1.0, 2.0, 3.0, 4.0, 5.0, -6.5]);
        assert_eq!((y.size(), y.kind()), (vec![3], Kind::Int64));
        assert_eq!(values(&y), [0.0, 2.0, 1.0]);
    }

    #[test]
    fn npy_reads_small_and_unsigned_types() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cases: [(&str, Vec<u8>, Kind, Vec<f64>); 6] = [
            ("|u1", vec![0, 255], Kind::Uint8, vec![0.0, 255.0]),
            ("|b1", vec![0, 7], Kind::Bool, vec![0.0, 1.0]),
            (
                "<i2",
                [-3i16, 4].iter().flat_map(|v| v.to_le_bytes()).collect(),
                Kind::Int16,
                vec![-3.0, 4.0],
            ),
            (
                "<f8",
                [0.5f64, 1e9].iter().flat_map(|v| v.to_le_bytes()).collect(),
                Kind::Double,
                vec![0.5, 1e9],
            ),
            (
                "<u2",
                [65535u16, 1].iter().flat_map(|v| v.to_le_bytes()).collect(),
                Kind::Int,
                vec![65535.0, 1.0],
            ),
            (
                "<u4",
                [4_000_000_000u32, 1]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
                Kind::Int64,
                vec![4e9, 1.0],
            ),
        ];
        for (descr, data, kind, expected) in cases {
            let path = write(dir.path(), "t.npy", &npy(descr, "(2,)", &data, 2));
            let t = read_npy(&path, 100).unwrap_or_else(|e| panic!("{descr}: {e}"));
            assert_eq!(t.kind(), kind, "{descr}");
            assert_eq!(values(&t), expected, "{descr}");
        }
        let path = write(
            dir.path(),
            "big.npy",
            &npy("<u8", "(1,)", &u64::MAX.to_le_bytes(), 1),
        );
        assert!(read_npy(&path, 100)
            .expect_err("too large")
            .contains("too large"));
    }

    #[test]
    fn npy_reads_what_tch_writes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.npy");
        let t = Tensor::from_slice(&[1.5f32, 2.5, 3.5, 4.5, 5.5, 6.5]).reshape([2, 3]);
        t.write_npy(&path).expect("write");
        let back = read_npy(&path, 100).expect("read");
        assert_eq!(back.size(), [2, 3]);
        assert!(back.equal(&t));
    }

    #[test]
    fn npy_format_problems_are_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = npy("<f4", "(2, 2)", &f32_bytes(&[1.0, 2.0, 3.0, 4.0]), 1);
        let labels = write(dir.path(), "y.npy", &npy("|u1", "(2,)", &[0, 1], 1));

        let truncated = write(dir.path(), "short.npy", &good[..good.len() - 3]);
        let err = load_npy(&truncated, &labels, "data").expect_err("truncated");
        assert_eq!(err.field, "data.features");
        assert!(err.reason.contains("short.npy: truncated"), "{err}");

        let mut long = good.clone();
        long.push(0);
        let long = write(dir.path(), "long.npy", &long);
        let err = load_npy(&long, &labels, "data").expect_err("long");
        assert!(err.reason.contains("1 bytes after the data"), "{err}");

        let x = write(dir.path(), "x.npy", &good);
        let bad_labels = write(dir.path(), "bad.npy", &good[..20]);
        let err = load_npy(&x, &bad_labels, "validation.data").expect_err("header cut");
        assert_eq!(err.field, "validation.data.targets");
        assert!(
            err.reason
                .contains("bad.npy: the file ends inside its header"),
            "{err}"
        );

        let three = write(dir.path(), "three.npy", &npy("|u1", "(3,)", &[0, 1, 1], 1));
        let err = load_npy(&x, &three, "data").expect_err("count");
        assert_eq!(err.field, "data.targets");
        assert!(err.reason.contains("3 targets, but the features"), "{err}");

        let mut fortran = good.clone();
        let at = fortran
            .windows(5)
            .position(|w| w == b"False")
            .expect("fortran_order");
        fortran[at..at + 5].copy_from_slice(b"True ");
        let fortran = write(dir.path(), "f.npy", &fortran);
        let err = read_npy(&fortran, 100).expect_err("fortran");
        assert!(err.contains("Fortran order"), "{err}");

        let big = write(dir.path(), "be.npy", &npy(">f4", "(2, 2)", &[0; 16], 1));
        let err = read_npy(&big, 100).expect_err("big-endian");
        assert!(err.contains("big-endian"), "{err}");

        let cases: [(&str, Vec<u8>, &str); 7] = [
            ("not npy", b"hello, world".to_vec(), "not a .npy file"),
            ("tiny", b"\x93NUM".to_vec(), "too short"),
            (
                "version",
                [&NPY_MAGIC[..], &[9, 0, 0, 0]].concat(),
                "version 9.0",
            ),
            ("complex", npy("<c8", "(1,)", &[0; 8], 1), "not supported"),
            (
                "structured",
                npy("[('a', '<f4')]", "(1,)", &[0; 4], 1),
                "structured",
            ),
            (
                "huge shape",
                npy("<f4", "(4294967296, 4294967296)", &[], 1),
                "more than 100 values",
            ),
            ("negative", npy("<f4", "(-1,)", &[], 1), "malformed header"),
        ];
        for (what, bytes, expected) in cases {
            let path = write(dir.path(), "case.npy", &bytes);
            let err = read_npy(&path, 100).expect_err(what);
            assert!(err.contains(expected), "{what}: {err}");
        }
        let fortran_header = br#"{"descr": "<f4", "fortran_order": False, "shape": (2,2)}"#;
        assert!(parse_npy_header(fortran_header).is_ok());
        for garbage in [
            &b"{"[..],
            b"{'descr': ",
            b"{'descr' '<f4'}",
            b"((((((((((((((((((((((",
            b"{'a': 1} x",
        ] {
            assert!(parse_npy_header(garbage).is_err());
        }
    }

    #[test]
    fn safetensors_picks_the_named_tensors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("d.safetensors");
        let x = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]).reshape([3, 2]);
        let y = Tensor::from_slice(&[0i64, 1, 1]);
        let other = Tensor::from_slice(&[9u8]);
        Tensor::write_safetensors(&[("pixels", &x), ("labels", &y), ("extra", &other)], &path)
            .expect("write");
        let spec = SafetensorsSpec {
            path: "unused".into(),
            features: "pixels".into(),
            targets: "labels".into(),
        };
        let (fx, fy) = load_safetensors(&spec, &path, "data").expect("load");
        assert!(fx.equal(&x));
        assert!(fy.equal(&y));

        let missing = SafetensorsSpec {
            targets: "targets".into(),
            ..spec.clone()
        };
        let err = load_safetensors(&missing, &path, "data").expect_err("missing");
        assert_eq!(err.field, "data.targets");
        assert!(
            err.reason
                .contains("no tensor named `targets` (tensors: extra, labels, pixels)"),
            "{err}"
        );

        let count = SafetensorsSpec {
            targets: "extra".into(),
            ..spec.clone()
        };
        let err = load_safetensors(&count, &path, "data").expect_err("count");
        assert_eq!(err.field, "data.targets");

        let garbage = write(
            dir.path(),
            "g.safetensors",
            b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}",
        );
        let err = load_safetensors(&spec, &garbage, "data").expect_err("garbage");
        assert_eq!(err.field, "data.path");
        assert!(err.reason.contains("not a valid safetensors file"), "{err}");
        let absent = dir.path().join("absent.safetensors");
        let err = load_safetensors(&spec, &absent, "data").expect_err("absent");
        assert_eq!(err.field, "data.path");
        assert!(err.reason.contains("cannot read"), "{err}");
    }
}
