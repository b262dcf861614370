// Placeholder so the object library has a source until the concern's real files land.
namespace ovseg::detail { void placeholder_image() {} }
