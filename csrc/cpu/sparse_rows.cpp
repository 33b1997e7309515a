#include "sparse_rows.h"

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
  std::stable_sort(order.begin(), order.end(), [&](int64_t x, int64_t y) {
    const auto &lx = lists[key_of(x)], &ly = lists[key_of(y)];
    return lx < ly;
  });

  SparseRows out;
  out.row_ids = order;
  out.value_offset.resize(num_rows);
  std::vector<int64_t> list_offset_of_key(lists.size(), -1);
  for (int64_t s = 0; s < num_rows;) {
    const int64_t key = key_of(order[s]);
    int64_t end = s + 1;
    while (end < num_rows && end - s < kMaxGroupRows && lists[key_of(order[end])] == lists[key]) ++end;
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

}  // namespace

SparseRows output_channel_rows(const Plan& plan, const ConvArgs& a, int64_t group) {
  const BlockMaskGeometry& g = a.mask;
  const int64_t cout_g = a.cout / a.groups;
  const int64_t o_first = group * cout_g;
  const int64_t ob_first = o_first / g.bo;
  const int64_t ob_last = (o_first + cout_g - 1) / g.bo;

  std::vector<std::vector<int32_t>> lists(ob_last - ob_first + 1);
  for (int64_t ob = ob_first; ob <= ob_last; ++ob) {
    std::vector<int32_t>& list = lists[ob - ob_first];
    const int32_t* kept = plan.row(ob);
    for (int32_t t = 0; t < plan.count(ob); ++t) {
      const BlockCoord c = decode_entry(kept[t], g);
      const IndexRange ir = block_range(c.outer, g.bi, a.cin_g);
      const IndexRange hr = block_range(c.hb, g.bh, a.kh);
      const IndexRange wr = block_range(c.wb, g.bw, a.kw);
      for (int64_t i = ir.begin; i < ir.end; ++i)
        for (int64_t kh = hr.begin; kh < hr.end; ++kh)
          for (int64_t kw = wr.begin; kw < wr.end; ++kw)
            list.push_back(static_cast<int32_t>((i * a.kh + kh) * a.kw + kw));
    }
    std::sort(list.begin(), list.end());
  }
  return group_rows(cout_g, [&](int64_t o) { return (o_first + o) / g.bo - ob_first; }, lists);
}

SparseRows input_channel_rows(const Plan& plan, const ConvArgs& a, int64_t group) {
  const BlockMaskGeometry& g = a.mask;
  const int64_t cout_g = a.cout / a.groups;
  const int64_t o_first = group * cout_g;
  const int64_t o_last = o_first + cout_g;

  std::vector<std::vector<int32_t>> lists(g.mi);
  for (int64_t ib = 0; ib < g.mi; ++ib) {
    std::vector<int32_t>& list = lists[ib];
    const int32_t* kept = plan.row(ib);
    for (int32_t t = 0; t < plan.count(ib); ++t) {
      const BlockCoord c = decode_entry(kept[t], g);
      const IndexRange orange = block_range(c.outer, g.bo, a.cout);
      if (orange.end <= o_first || orange.begin >= o_last) continue;
      const IndexRange hr = block_range(c.hb, g.bh, a.kh);
      const IndexRange wr = block_range(c.wb, g.bw, a.kw);
      for (int64_t o = std::max(orange.begin, o_first); o < std::min(orange.end, o_last); ++o)
        for (int64_t kh = hr.begin; kh < hr.end; ++kh)
          for (int64_t kw = wr.begin; kw < wr.end; ++kw)
            list.push_back(static_cast<int32_t>(((o - o_first) * a.kh + kh) * a.kw + kw));
    }
    std::sort(list.begin(), list.end());
  }
  return group_rows(a.cin_g, [&](int64_t c) { return c / g.bi; }, lists);
}

}  // namespace rskcnn::cpu
