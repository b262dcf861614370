// The smallest real user of the installed library: the public headers and ovseg::ovseg only.
//   ovseg_consumer --version-check
//   ovseg_consumer --model BUNDLE --image IMAGE --classes a,b,c [--mode eval|demo] [--labels-out PNG]
#include <cstdio>
#include <cstring>
#include <exception>
#include <sstream>
#include <string>
#include <vector>

#include <ovseg/io.hpp>
#include <ovseg/ovseg.hpp>

namespace {

std::vector<std::string> split_classes(const std::string& list) {
  std::vector<std::string> out;
  std::stringstream ss(list);
  std::string name;
  while (std::getline(ss, name, ','))
    if (!name.empty()) out.push_back(name);
  return out;
}

int usage() {
  std::fprintf(stderr,
               "usage: ovseg_consumer --version-check\n"
               "       ovseg_consumer --model BUNDLE --image IMAGE --classes a,b,c [--mode eval|demo] "
               "[--labels-out PNG]\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_dir, image_path, classes, mode = "eval", labels_out;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--version-check") {
      const char* v = ovseg::version();
      if (v == nullptr || *v == '\0') return 1;
      std::printf("ovseg %s\n", v);
      return 0;
    }
    if (i + 1 >= argc) return usage();
    if (arg == "--model") model_dir = argv[++i];
    else if (arg == "--image") image_path = argv[++i];
    else if (arg == "--classes") classes = argv[++i];
    else if (arg == "--mode") mode = argv[++i];
    else if (arg == "--labels-out") labels_out = argv[++i];
    else return usage();
  }
  if (model_dir.empty() || image_path.empty() || classes.empty()) return usage();
  try {
    const ovseg::Model model = ovseg::Model::load(model_dir);
    ovseg::SegmentOptions options;
    options.mode = ovseg::parse_mode(mode);
    const ovseg::Result r = model.segment_file(image_path, split_classes(classes), options);
    std::printf("image %dx%d, %zu valid region(s)\n", r.width, r.height, r.segments.size());
    for (std::size_t c = 0; c < r.classes.size(); ++c)
      std::printf("%s\t%lld\n", r.classes[c].c_str(), static_cast<long long>(r.class_pixels[c]));
    std::printf("(unlabeled)\t%lld\n", static_cast<long long>(r.unlabeled_pixels));
    // The label map exactly as `ovseg segment` writes it (ovseg/io.hpp).
    if (!labels_out.empty()) ovseg::write_label_map(labels_out, ovseg::label_map(r));
    return 0;
  } catch (const ovseg::Error& e) {
    std::fprintf(stderr, "ovseg_consumer: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ovseg_consumer: unexpected error: %s\n", e.what());
    return 1;
  }
}
