// embed.cpp - uflow in a C++ program that decodes its images itself (here with
// libpng) and hands the pixels to the library:
//
//     c++ -std=c++11 embed.cpp $(pkg-config --cflags --libs uflow libpng) -o embed_cpp
//     ./embed_cpp MODEL IMAGE.png [X Y W H]
//
// With X Y W H, only that rectangle of the image is predicted (a row stride that is
// not width x 3, as with a region of a camera frame). Prints
//     image,score,anomalous,detected_pixels,width,height
// and the mean of the anomaly map. Exit status 1 with one line on stderr on failure.
#include <png.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <uflow.h>

namespace {

struct ModelDeleter {
    void operator()(uflow_model *m) const { uflow_model_free(m); }
};
struct ResultDeleter {
    void operator()(uflow_result *r) const { uflow_result_free(r); }
};
using Model = std::unique_ptr<uflow_model, ModelDeleter>;
using Result = std::unique_ptr<uflow_result, ResultDeleter>;

struct Rgb {
    int width = 0, height = 0;
    std::vector<unsigned char> pixels;  // height x width x 3
};

Rgb read_png(const std::string &path) {
    png_image image{};
    image.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_file(&image, path.c_str())) throw std::runtime_error(path + ": " + image.message);
    image.format = PNG_FORMAT_RGB;
    Rgb rgb;
    rgb.width = static_cast<int>(image.width), rgb.height = static_cast<int>(image.height);
    rgb.pixels.resize(PNG_IMAGE_SIZE(image));
    if (!png_image_finish_read(&image, nullptr, rgb.pixels.data(), 0, nullptr))
        throw std::runtime_error(path + ": " + image.message);
    return rgb;
}

}  // namespace

int main(int argc, char **argv) {
    if (argc != 3 && argc != 7) {
        std::fprintf(stderr, "usage: %s MODEL IMAGE.png [X Y W H]\n", argv[0]);
        return 2;
    }
    try {
        Model model(uflow_model_load(argv[1], nullptr));
        if (!model) throw std::runtime_error(uflow_last_error());
        Rgb rgb = read_png(argv[2]);
        int x = 0, y = 0, w = rgb.width, h = rgb.height;
        if (argc == 7) x = std::atoi(argv[3]), y = std::atoi(argv[4]), w = std::atoi(argv[5]), h = std::atoi(argv[6]);
        if (x < 0 || y < 0 || w < 1 || h < 1 || x + w > rgb.width || y + h > rgb.height)
            throw std::runtime_error("the rectangle is not inside the image");
        const unsigned char *first = rgb.pixels.data() + (static_cast<size_t>(y) * rgb.width + x) * 3;
        uflow_predict_options options = uflow_predict_default_options();
        Result r(uflow_predict_pixels(model.get(), first, w, h, 3, static_cast<size_t>(rgb.width) * 3, &options));
        if (!r) throw std::runtime_error(uflow_last_error());
        const float *map = uflow_result_anomaly_map(r.get());
        double sum = 0.0;
        for (int i = 0; i < uflow_result_width(r.get()) * uflow_result_height(r.get()); i++) sum += map[i];
        std::printf("%s,%.6f,%d,%d,%d,%d\n", argv[2], uflow_result_score(r.get()), uflow_result_anomalous(r.get()),
                    uflow_result_detected_pixels(r.get()), uflow_result_width(r.get()), uflow_result_height(r.get()));
        std::printf("mean map %.6f\n", sum / (static_cast<double>(w) * h));
    } catch (const std::exception &e) {
        std::fprintf(stderr, "embed_cpp: %s\n", e.what());
        return 1;
    }
    return 0;
}
