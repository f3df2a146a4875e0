# Installs the library, its headers and a CMake package: find_package(hitch) then
# target_link_libraries(app PRIVATE hitch::hitch).
include(CMakePackageConfigHelpers)

install(TARGETS hitch EXPORT hitchTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(DIRECTORY core ops nn optim DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/hitch
  FILES_MATCHING PATTERN "*.h")
install(FILES hitch.h DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/hitch)
install(EXPORT hitchTargets NAMESPACE hitch:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/hitch)
configure_package_config_file(cmake/hitchConfig.cmake.in ${CMAKE_CURRENT_BINARY_DIR}/hitchConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/hitch)
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/hitchConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/hitchConfig.cmake ${CMAKE_CURRENT_BINARY_DIR}/hitchConfigVersion.cmake
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/hitch)
