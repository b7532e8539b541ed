//! open_clip's `SimpleTokenizer`: cleaning ([`clean_lower`]), its split pattern,
//! byte-level BPE over the vocabulary open_clip ships (`bpe_simple_vocab_16e6.txt.gz`,
//! the same merges as CLIP's), `<start_of_text>` + ids + `<end_of_text>`, and
//! open_clip's truncation: an over-long prompt keeps its first 77 ids and the last
//! becomes `<end_of_text>`
//! (<https://github.com/mlfoundations/open_clip/blob/v3.3.0/src/open_clip/tokenizer.py>).
//!
//! As in open_clip, `<start_of_text>` and `<end_of_text>` typed inside a prompt
//! are the special tokens themselves.

use std::collections::HashMap;
use std::io::Read;

use anyhow::{bail, Context, Result};

use super::clean::clean_lower;

/// The BPE vocabulary open_clip 3.3.0 ships, byte for byte.
const VOCAB_GZ: &[u8] = include_bytes!("bpe_simple_vocab_16e6.txt.gz");
/// `merges[1:49152-256-2+1]`: the merges open_clip uses.
const MERGES: usize = 49152 - 256 - 2;

/// open_clip's tokenizer, ready to encode prompts.
pub(crate) struct SimpleTokenizer {
    encoder: HashMap<String, u32>,
    ranks: HashMap<(String, String), u32>,
    byte_encoder: [char; 256],
    pattern: regex::Regex,
    sot: u32,
    eot: u32,
    context_length: usize,
}

/// GPT-2's `bytes_to_unicode`: printable bytes stand for themselves, the rest
/// for code points from 256 on. Returns the table by byte, and its values in the
/// dict's order (printable bytes first), which is the vocabulary's order.
fn bytes_to_unicode() -> ([char; 256], Vec<char>) {
    let mut printable: Vec<u32> = (u32::from(b'!')..=u32::from(b'~'))
        .chain(0xa1..=0xac)
        .chain(0xae..=0xff)
        .collect();
    let mut chars: Vec<u32> = printable.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !printable.contains(&b) {
            printable.push(b);
            chars.push(256 + n);
            n += 1;
        }
    }
    let mut table = ['\0'; 256];
    let mut order = Vec::with_capacity(256);
    for (b, c) in printable.into_iter().zip(chars) {
        let c = char::from_u32(c).expect("below 512");
        table[b as usize] = c;
        order.push(c);
    }
    (table, order)
}

impl SimpleTokenizer {
    /// The tokenizer for a `context_length`-token text tower.
    pub(crate) fn new(context_length: usize) -> Result<Self> {
        let mut text = String::new();
        flate2::read::GzDecoder::new(VOCAB_GZ)
            .read_to_string(&mut text)
            .context("reading open_clip's BPE vocabulary")?;
        let merges: Vec<(String, String)> = text
            .split('\n')
            .skip(1)
            .take(MERGES)
            .map(|l| {
                let (a, b) = l.split_once(' ').context("a merge is two symbols")?;
                Ok((a.to_string(), b.to_string()))
            })
            .collect::<Result<_>>()?;
        let (byte_encoder, order) = bytes_to_unicode();
        let mut vocab: Vec<String> = order.iter().map(|c| c.to_string()).collect();
        vocab.extend(order.iter().map(|c| format!("{c}</w>")));
        vocab.extend(merges.iter().map(|(a, b)| format!("{a}{b}")));
        vocab.extend(["<start_of_text>".to_string(), "<end_of_text>".to_string()]);
        let encoder: HashMap<String, u32> = vocab
            .into_iter()
            .enumerate()
            .map(|(i, v)| (v, i as u32))
            .collect();
        let ranks = merges
            .into_iter()
            .enumerate()
            .map(|(i, m)| (m, i as u32))
            .collect();
        let pattern = regex::Regex::new(
            r"<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+",
        )
        .context("open_clip's split pattern")?;
        Ok(Self {
            sot: encoder["<start_of_text>"],
            eot: encoder["<end_of_text>"],
            encoder,
            ranks,
            byte_encoder,
            pattern,
            context_length,
        })
    }

    /// Id of `<end_of_text>`, where the text tower pools.
    pub(crate) fn eot(&self) -> u32 {
        self.eot
    }

    /// Token ids of one prompt, as open_clip's `tokenizer(prompt)` row without
    /// its padding zeros.
    pub(crate) fn encode(&self, prompt: &str) -> Result<Vec<u32>> {
        let text = clean_lower(prompt);
        let mut ids = vec![self.sot];
        for m in self.pattern.find_iter(&text) {
            let token = m.as_str();
            if token == "<start_of_text>" || token == "<end_of_text>" {
                ids.push(self.encoder[token]);
                continue;
            }
            let encoded: String = token
                .bytes()
                .map(|b| self.byte_encoder[b as usize])
                .collect();
            for piece in self.bpe(&encoded) {
                match self.encoder.get(&piece) {
                    Some(&id) => ids.push(id),
                    None => bail!("BPE piece {piece:?} is not in open_clip's vocabulary"),
                }
            }
        }
        ids.push(self.eot);
        if ids.len() > self.context_length {
            ids.truncate(self.context_length);
            if let Some(last) = ids.last_mut() {
                *last = self.eot;
            }
        }
        Ok(ids)
    }

    /// `SimpleTokenizer.bpe`: merge the lowest-ranked adjacent pair until none is
    /// in the table.
    fn bpe(&self, token: &str) -> Vec<String> {
        let mut word: Vec<String> = token.chars().map(String::from).collect();
        if let Some(last) = word.last_mut() {
            last.push_str("</w>");
        }
        while word.len() > 1 {
            let best = word
                .windows(2)
                .filter_map(|p| self.ranks.get(&(p[0].clone(), p[1].clone())))
                .min();
            let Some(&rank) = best else { break };
            let mut merged = Vec::with_capacity(word.len());
            let mut i = 0;
            while i < word.len() {
                if i + 1 < word.len()
                    && self.ranks.get(&(word[i].clone(), word[i + 1].clone())) == Some(&rank)
                {
                    merged.push(format!("{}{}", word[i], word[i + 1]));
                    i += 2;
                } else {
                    merged.push(word[i].clone());
                    i += 1;
                }
            }
            word = merged;
        }
        word
    }
}
