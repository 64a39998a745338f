// The framed output of one H2Session: the bytes to encrypt, in order, as a list of segments, and
// the payload memory those segments reference. No nghttp2 here: bytes and spans only.
//
// Segments. A segment is a contiguous run of output bytes of one of two kinds:
//   - owned: copied into a buffer the queue owns (frame headers, control frames). Owned bytes
//     appended back to back extend the last segment when it is owned.
//   - payload: a reference to memory lent through a Source (a stream's DATA payload), never
//     copied. Each payload segment knows its Source.
// segments() lists the segments not yet consumed, front first; the first one may have lost a
// prefix to consume(). The spans (both the list and each segment) are valid until the next call
// of any non-const member of the queue or of a Source (an owned append may move the owned buffer;
// consume() and relocate() rewrite segments in place).
//
// Payload references. The owner lends memory to a Source (Source::lend); append_payload() moves
// the first bytes of what a Source holds into the output, as the payload of the frame whose
// header was appended just before. Every lent byte leaves the queue exactly once, reported by
// address: each reported piece lies inside one span given to lend() (a part of it, or all of it),
// never as a byte count. The three ways out:
//   - consume(bytes, on_passed): the first `bytes` of the output were taken (any amount, even the
//     middle of a segment); each payload piece among them is reported, in output order;
//   - clear(on_dropped): the whole output is dropped; each payload piece in it is reported, in
//     output order;
//   - Source::drop_unframed(on_dropped): the Source's bytes not yet framed, in lending order.
// A piece is reported after the queue has forgotten it: Source::framed() no longer counts it, so
// the report of a Source's last framed piece sees framed() == 0, and may destroy the Source then
// (nothing in the queue names it any more). A Source must not be destroyed earlier. The report
// callbacks may call relocate() and Source::lend(); they must not append, consume() or clear().
// Destroying the queue, or a Source with unframed bytes, drops its references without reports.
//
// Moving lent memory: relocate(source, from, to, n) re-points every reference of `source` into
// [from, from+n), framed or not, at the same offset in [to, to+n); later reports name the new
// addresses.
//
// Frame boundaries. The queue follows the frame structure of what it is given (RFC 9113 section
// 4.1: a 9-byte header whose first 3 bytes are the payload length, then the payload; a header may
// arrive in several owned appends). at_frame_boundary() is true when the bytes appended so far end
// between two frames: the only place where a session may stop taking frames from its library, or
// append a frame of its own. append_payload() must stay within the payload the last header
// announced.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <span>
#include <vector>

namespace ringtunnel::h2 {

class OutputQueue {
 public:
  // The payload memory one stream has lent to the output: held (unframed) until
  // append_payload() frames it, then referenced by payload segments (framed) until they leave.
  class Source {
   public:
    Source() = default;
    Source(const Source&) = delete;  // the queue points at it
    Source& operator=(const Source&) = delete;

    // Appends [piece.data(), piece.data()+piece.size()) to the unframed bytes (not copied).
    void lend(std::span<const uint8_t> piece) {
      unframed_pieces_.push_back(piece);
      unframed_ += piece.size();
    }
    // Bytes lent and not yet framed.
    size_t unframed() const { return unframed_; }
    // Bytes framed and still in the output.
    size_t framed() const { return framed_; }
    // Forgets every unframed piece, then reports each one to on_dropped(piece), in lending order.
    template <typename F>
    void drop_unframed(F&& on_dropped) {
      std::deque<std::span<const uint8_t>> pieces;
      pieces.swap(unframed_pieces_);
      unframed_ = 0;
      for (const std::span<const uint8_t>& piece : pieces)
        on_dropped(piece);
    }

   private:
    friend class OutputQueue;
    std::deque<std::span<const uint8_t>> unframed_pieces_;
    size_t unframed_ = 0;
    size_t framed_ = 0;
  };

  OutputQueue() = default;
  OutputQueue(const OutputQueue&) = delete;
  OutputQueue& operator=(const OutputQueue&) = delete;

  // Copies [data, data+size) to the end of the output (frame headers, control frames).
  void append_owned(const uint8_t* data, size_t size);
  // Moves the first `size` unframed bytes of `source` (size <= source.unframed()) to the end of
  // the output, as references: one payload segment per lent piece they touch.
  void append_payload(Source& source, size_t size);

  std::span<const std::span<const uint8_t>> segments() const {
    return {spans_.data() + head_, spans_.size() - head_};
  }
  // Drops the first `bytes` of segments(); calls on_passed(source, piece) for each payload piece
  // among them, in order (see the top of the file).
  template <typename F>
  void consume(size_t bytes, F&& on_passed);
  // Drops the whole output and the frame tracking; calls on_dropped(source, piece) for each
  // payload segment, in order.
  template <typename F>
  void clear(F&& on_dropped);
  void relocate(Source& source, const uint8_t* from, const uint8_t* to, size_t size);

  // Bytes in segments().
  size_t bytes() const { return bytes_; }
  bool empty() const { return head_ == spans_.size(); }
  bool at_frame_boundary() const { return header_have_ == 0 && payload_left_ == 0; }

 private:
  struct Segment {
    Source* source;  // nullptr: owned bytes
    size_t offset;   // into owned_, for owned bytes (kept, since a growing owned_ moves)
  };

  // Drops up to `bytes` from the front segment; returns what was dropped, with its Source for a
  // payload (nullptr for owned bytes).
  std::span<const uint8_t> pass_front(size_t bytes, Source*& source);
  // After consume(): frees what the consumed front held (all of it once the output is empty).
  void trim();
  // Forgets every segment and owned byte (not the frame tracking).
  void drop_segments();
  void advance_frames(const uint8_t* data, size_t size);
  void rebase_owned();

  // spans_[i] and meta_[i] describe one segment; those before head_ are consumed.
  std::vector<std::span<const uint8_t>> spans_;
  std::vector<Segment> meta_;
  size_t head_ = 0;
  std::vector<uint8_t> owned_;
  size_t bytes_ = 0;
  // Where the appended bytes stand in the frame stream.
  static constexpr size_t kHeaderLength = 9;
  uint8_t header_have_ = 0;
  uint8_t header_[kHeaderLength] = {};
  size_t payload_left_ = 0;
};

template <typename F>
void OutputQueue::consume(size_t bytes, F&& on_passed) {
  while (bytes > 0 && !empty()) {
    Source* source = nullptr;
    const std::span<const uint8_t> passed = pass_front(bytes, source);
    bytes -= passed.size();
    if (source) on_passed(*source, passed);
  }
  trim();
}

template <typename F>
void OutputQueue::clear(F&& on_dropped) {
  // Indexes, not iterators: a report may relocate later segments (in place).
  for (size_t i = head_; i < spans_.size(); ++i) {
    if (Source* source = meta_[i].source) {
      source->framed_ -= spans_[i].size();
      on_dropped(*source, spans_[i]);
    }
  }
  drop_segments();
  header_have_ = 0;
  payload_left_ = 0;
}

}  // namespace ringtunnel::h2
