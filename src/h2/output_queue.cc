// OutputQueue: segments over an owned buffer and lent payloads. See output_queue.h.
#include "ringtunnel/h2/output_queue.h"

#include <algorithm>
#include <cstring>

namespace ringtunnel::h2 {

namespace {

// A burst (a flood of ACKs, many small frames) must not pin its memory for the connection's life;
// 64 KiB of owned bytes covers the steady state.
constexpr size_t kOwnedKeep = 64u << 10;
// Consumed segment slots are erased once there are this many and they are the larger half.
constexpr size_t kDeadSegments = 256;

}  // namespace

void OutputQueue::append_owned(const uint8_t* data, size_t size) {
  if (size == 0) return;
  advance_frames(data, size);
  const size_t offset = owned_.size();
  const uint8_t* old_base = owned_.data();
  owned_.insert(owned_.end(), data, data + size);
  if (owned_.data() != old_base) rebase_owned();
  bytes_ += size;
  // Extend the last segment when it is owned and ends where these bytes begin.
  if (spans_.size() > head_ && !meta_.back().source &&
      meta_.back().offset + spans_.back().size() == offset) {
    spans_.back() = {owned_.data() + meta_.back().offset, spans_.back().size() + size};
    return;
  }
  spans_.emplace_back(owned_.data() + offset, size);
  meta_.push_back({nullptr, offset});
}

void OutputQueue::append_payload(Source& source, size_t size) {
  while (size > 0) {
    std::span<const uint8_t>& piece = source.unframed_pieces_.front();
    const size_t take = std::min(size, piece.size());
    payload_left_ -= take;  // a payload always follows its header, which set payload_left_
    bytes_ += take;
    source.framed_ += take;
    source.unframed_ -= take;
    spans_.emplace_back(piece.data(), take);
    meta_.push_back({&source, 0});
    size -= take;
    if (take == piece.size()) {
      source.unframed_pieces_.pop_front();
    } else {
      piece = piece.subspan(take);
    }
  }
}

void OutputQueue::relocate(Source& source, const uint8_t* from, const uint8_t* to, size_t size) {
  const auto lo = reinterpret_cast<uintptr_t>(from);
  auto move = [&](std::span<const uint8_t>& piece) {
    const uintptr_t at = reinterpret_cast<uintptr_t>(piece.data()) - lo;  // wraps when below
    if (at < size) piece = {to + at, piece.size()};
  };
  for (std::span<const uint8_t>& piece : source.unframed_pieces_)
    move(piece);
  if (source.framed_ == 0) return;
  for (size_t i = head_; i < spans_.size(); ++i)
    if (meta_[i].source == &source) move(spans_[i]);
}

std::span<const uint8_t> OutputQueue::pass_front(size_t bytes, Source*& source) {
  std::span<const uint8_t>& seg = spans_[head_];
  Segment& meta = meta_[head_];
  const size_t take = std::min(bytes, seg.size());
  const std::span<const uint8_t> passed = seg.first(take);
  source = meta.source;
  bytes_ -= take;
  if (take == seg.size()) {
    ++head_;
  } else {
    seg = seg.subspan(take);
    meta.offset += take;
  }
  if (source) source->framed_ -= take;
  return passed;
}

void OutputQueue::trim() {
  if (empty()) {
    drop_segments();  // the frame tracking stays: the last frame may not be complete yet
    return;
  }
  if (head_ >= kDeadSegments && head_ * 2 >= spans_.size()) {
    spans_.erase(spans_.begin(), spans_.begin() + ptrdiff_t(head_));
    meta_.erase(meta_.begin(), meta_.begin() + ptrdiff_t(head_));
    head_ = 0;
  }
  // Owned bytes before the first live owned segment are dead; move the rest down once the dead
  // part is both large and the larger half.
  size_t live = owned_.size();
  for (size_t i = head_; i < spans_.size(); ++i) {
    if (!meta_[i].source) {
      live = meta_[i].offset;
      break;
    }
  }
  if (live < kOwnedKeep || live * 2 < owned_.size()) return;
  owned_.erase(owned_.begin(), owned_.begin() + ptrdiff_t(live));
  for (size_t i = head_; i < spans_.size(); ++i) {
    if (!meta_[i].source) meta_[i].offset -= live;
  }
  rebase_owned();
}

void OutputQueue::drop_segments() {
  spans_.clear();
  meta_.clear();
  head_ = 0;
  owned_.clear();
  if (owned_.capacity() > kOwnedKeep) std::vector<uint8_t>().swap(owned_);
  bytes_ = 0;
}

void OutputQueue::advance_frames(const uint8_t* data, size_t size) {
  while (size > 0) {
    if (payload_left_ > 0) {
      const size_t take = std::min(size, payload_left_);
      payload_left_ -= take;
      data += take;
      size -= take;
      continue;
    }
    const size_t take = std::min(size, kHeaderLength - header_have_);
    std::memcpy(header_ + header_have_, data, take);
    header_have_ = uint8_t(header_have_ + take);
    data += take;
    size -= take;
    if (header_have_ == kHeaderLength) {
      payload_left_ = size_t(header_[0]) << 16 | size_t(header_[1]) << 8 | header_[2];
      header_have_ = 0;
    }
  }
}

void OutputQueue::rebase_owned() {
  for (size_t i = head_; i < spans_.size(); ++i) {
    if (!meta_[i].source) spans_[i] = {owned_.data() + meta_[i].offset, spans_[i].size()};
  }
}

}  // namespace ringtunnel::h2
