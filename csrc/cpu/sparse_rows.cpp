#include "sparse_rows.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <numeric>

namespace rskcnn::cpu {
namespace {

// Groups rows by key, keys by list content, then cuts runs of equal lists into groups.
// `key_of(row)` names the row's list; `lists[key]` is that list.
template <typename KeyOf>
SparseRows group_rows(int64_t num_rows, KeyOf key_of, const std::vector<std::vector<int32_t>>& lists) {
  std::vector<int64_t> order(num_rows);
  std::iota(order.begin(), order.end(), 0);
  // Rows of one key share their list: ordered by key alone, they never compare the lists.
  std::stable_sort(order.begin(), order.end(), [&](int64_t x, int64_t y) {
    const int64_t kx = key_of(x), ky = key_of(y);
    if (kx == ky) return false;
    const auto &lx = lists[kx], &ly = lists[ky];
    return lx < ly || (lx == ly && kx < ky);
  });

  SparseRows out;
  out.row_ids = order;
  out.value_offset.resize(num_rows);
  std::vector<int64_t> list_offset_of_key(lists.size(), -1);
  for (int64_t s = 0; s < num_rows;) {
    const int64_t key = key_of(order[s]);
    int64_t end = s + 1;
    while (end < num_rows && end - s < kMaxGroupRows &&
           (key_of(order[end]) == key || lists[key_of(order[end])] == lists[key]))
      ++end;
    if (list_offset_of_key[key] < 0) {
      list_offset_of_key[key] = static_cast<int64_t>(out.columns.size());
      out.columns.insert(out.columns.end(), lists[key].begin(), lists[key].end());
    }
    const int64_t nnz = static_cast<int64_t>(lists[key].size());
    out.groups.push_back(RowGroup{s, static_cast<int32_t>(end - s), list_offset_of_key[key], nnz});
    for (int64_t slot = s; slot < end; ++slot) {
      out.value_offset[slot] = out.num_values;
      out.num_values += nnz;
    }
    s = end;
  }
  return out;
}

// Appends the columns of a mask row's kept entries (sorted by outer block, then by tap
// block): per run of one outer block, channel c by channel over the block's channels in
// [lo, hi), the run's kept taps, as (c - lo) * KH * KW + tap. One-tap blocks thus come out
// sorted.
void append_block_columns(const int32_t* kept, int32_t count, const ConvArgs& a, int64_t outer_block,
                          int64_t outer_extent, int64_t lo, int64_t hi, std::vector<int32_t>& list) {
  const BlockMaskGeometry& g = a.mask;
  std::vector<int32_t> taps;
  for (int32_t t0 = 0; t0 < count;) {
    const int64_t outer = decode_entry(kept[t0], g).outer;
    int32_t t1 = t0 + 1;
    while (t1 < count && decode_entry(kept[t1], g).outer == outer) ++t1;
    taps.clear();
    for (int32_t t = t0; t < t1; ++t) {
      const BlockCoord c = decode_entry(kept[t], g);
      const IndexRange hr = block_range(c.hb, g.bh, a.kh);
      const IndexRange wr = block_range(c.wb, g.bw, a.kw);
      for (int64_t kh = hr.begin; kh < hr.end; ++kh)
        for (int64_t kw = wr.begin; kw < wr.end; ++kw) taps.push_back(static_cast<int32_t>(kh * a.kw + kw));
    }
    const IndexRange range = block_range(outer, outer_block, outer_extent);
    for (int64_t c = std::max(range.begin, lo); c < std::min(range.end, hi); ++c)
      for (const int32_t tap : taps) list.push_back(static_cast<int32_t>((c - lo) * a.kh * a.kw + tap));
    t0 = t1;
  }
}

// Sorts a list unless it already is: element lists and one-tap blocks come out sorted.
void sort_list(std::vector<int32_t>& list) {
  if (!std::is_sorted(list.begin(), list.end())) std::sort(list.begin(), list.end());
}

}  // namespace

SparseRows output_channel_rows(const BlockLists& plan, const ConvArgs& a, int64_t group) {
  const BlockMaskGeometry& g = a.mask;
  const int64_t cout_g = a.cout / a.groups;
  const int64_t o_first = group * cout_g;
  const int64_t ob_first = o_first / g.bo;
  const int64_t ob_last = (o_first + cout_g - 1) / g.bo;
  // With one input channel and one tap per block, a plan entry (ib * MH + hb) * MW + wb is
  // already the column (i * KH + kh) * KW + kw.
  const bool entries_are_columns = g.bi == 1 && g.bh == 1 && g.bw == 1;

  std::vector<std::vector<int32_t>> lists(ob_last - ob_first + 1);
  at::parallel_for(ob_first, ob_last + 1, 1, [&](int64_t begin, int64_t end) {
    for (int64_t ob = begin; ob < end; ++ob) {
      std::vector<int32_t>& list = lists[ob - ob_first];
      const int32_t* kept = plan.row(ob);
      const int32_t count = plan.count(ob);
      if (entries_are_columns) {
        list.assign(kept, kept + count);
        continue;
      }
      list.reserve(static_cast<size_t>(count) * g.bi * g.bh * g.bw);
      append_block_columns(kept, count, a, g.bi, a.cin_g, 0, a.cin_g, list);
      sort_list(list);
    }
  });
  return group_rows(cout_g, [&](int64_t o) { return (o_first + o) / g.bo - ob_first; }, lists);
}

SparseRows input_channel_rows(const BlockLists& plan, const ConvArgs& a, int64_t group) {
  const BlockMaskGeometry& g = a.mask;
  const int64_t cout_g = a.cout / a.groups;
  const int64_t o_first = group * cout_g;
  const int64_t o_last = o_first + cout_g;
  const int64_t taps = a.kh * a.kw;
  // With one output channel and one tap per block, a column-plan entry (ob * MH + hb) * MW + wb
  // is (o * KH + kh) * KW + kw: the group's entries are one sorted run, shifted by o_first * taps.
  const bool entries_are_columns = g.bo == 1 && g.bh == 1 && g.bw == 1;

  std::vector<std::vector<int32_t>> lists(g.mi);
  at::parallel_for(0, g.mi, 1, [&](int64_t begin, int64_t end) {
    for (int64_t ib = begin; ib < end; ++ib) {
      std::vector<int32_t>& list = lists[ib];
      const int32_t* kept = plan.row(ib);
      const int32_t count = plan.count(ib);
      if (entries_are_columns) {
        const int32_t* first = std::lower_bound(kept, kept + count, o_first * taps);
        const int32_t* last = std::lower_bound(first, kept + count, o_last * taps);
        list.resize(last - first);
        const auto shift = static_cast<int32_t>(o_first * taps);
        for (int64_t e = 0; e < last - first; ++e) list[e] = first[e] - shift;
        continue;
      }
      append_block_columns(kept, count, a, g.bo, a.cout, o_first, o_last, list);
      sort_list(list);
    }
  });
  return group_rows(a.cin_g, [&](int64_t c) { return c / g.bi; }, lists);
}

}  // namespace rskcnn::cpu
