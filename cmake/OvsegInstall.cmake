# Install and package config: find_package(ovseg) → ovseg::ovseg (tests/consumer checks it).
include(CMakePackageConfigHelpers)
install(TARGETS ovseg EXPORT ovsegTargets
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/ovseg DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(FILES ${PROJECT_BINARY_DIR}/include/ovseg/version.hpp DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/ovseg)
install(DIRECTORY ${PROJECT_SOURCE_DIR}/models/ DESTINATION ${CMAKE_INSTALL_DATADIR}/ovseg/models)
# The datasets' class lists (data/class_lists.json): `--dataset-classes ade150` after install.
install(FILES ${PROJECT_SOURCE_DIR}/data/class_lists.json DESTINATION ${CMAKE_INSTALL_DATADIR}/ovseg)
install(EXPORT ovsegTargets NAMESPACE ovseg:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/ovseg)
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/ovsegConfig.cmake.in ${PROJECT_BINARY_DIR}/ovsegConfig.cmake
                              INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/ovseg)
write_basic_package_version_file(${PROJECT_BINARY_DIR}/ovsegConfigVersion.cmake COMPATIBILITY SameMajorVersion)
install(FILES ${PROJECT_BINARY_DIR}/ovsegConfig.cmake ${PROJECT_BINARY_DIR}/ovsegConfigVersion.cmake
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/ovseg)
