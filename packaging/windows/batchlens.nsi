; BatchLens per-user installer for Windows (NSIS 3, Modern UI 2).
;
;   makensis /DVERSION=0.1.0 /DBUNDLE_DIR=..\..\dist\batchlens /DICON=..\..\build\icons\batchlens.ico
;            /DOUTFILE=..\..\dist\BatchLens-0.1.0-windows-x64-setup.exe packaging\windows\batchlens.nsi
;
; (on Linux: makensis -DVERSION=... ; packaging/build_windows.sh passes all of these).
; Installs for the current user only: no administrator rights, into %LOCALAPPDATA%\Programs\BatchLens,
; a Start-menu shortcut (and optionally a desktop one) to the windowed batchlens-gui.exe, and an
; uninstaller registered in "Installed apps". NSIS installers must stay under 2 GB, which is why the
; default Windows build bundles the CPU build of torch (see README, "Build the installers").

Unicode true
ManifestDPIAware true
RequestExecutionLevel user
SetCompressor /SOLID lzma
SetCompressorDictSize 64

!ifndef VERSION
  !error "pass /DVERSION=x.y.z"
!endif
!ifndef BUNDLE_DIR
  !error "pass /DBUNDLE_DIR=path\to\dist\batchlens (the PyInstaller one-folder bundle)"
!endif
!ifndef ICON
  !error "pass /DICON=path\to\batchlens.ico"
!endif
!ifndef OUTFILE
  !define OUTFILE "BatchLens-${VERSION}-windows-x64-setup.exe"
!endif

!define APP_NAME "BatchLens"
!define GUI_EXE "batchlens-gui.exe"
!define UNINSTALL_KEY "Software\Microsoft\Windows\CurrentVersion\Uninstall\BatchLens"

Name "${APP_NAME}"
OutFile "${OUTFILE}"
InstallDir "$LOCALAPPDATA\Programs\BatchLens"
InstallDirRegKey HKCU "${UNINSTALL_KEY}" "InstallLocation"
BrandingText "${APP_NAME} ${VERSION}"

VIProductVersion "${VERSION}.0"
VIAddVersionKey "ProductName" "${APP_NAME}"
VIAddVersionKey "ProductVersion" "${VERSION}"
VIAddVersionKey "FileVersion" "${VERSION}"
VIAddVersionKey "FileDescription" "${APP_NAME} installer"
VIAddVersionKey "LegalCopyright" "BatchLens developers (MIT licence)"

!include "MUI2.nsh"
!include "FileFunc.nsh"

!define MUI_ICON "${ICON}"
!define MUI_UNICON "${ICON}"
!define MUI_ABORTWARNING
!define MUI_FINISHPAGE_RUN "$INSTDIR\${GUI_EXE}"
!define MUI_FINISHPAGE_RUN_TEXT "Open BatchLens now"
!define MUI_FINISHPAGE_SHOWREADME ""
!define MUI_FINISHPAGE_SHOWREADME_NOTCHECKED
!define MUI_FINISHPAGE_SHOWREADME_TEXT "Put a shortcut on the desktop"
!define MUI_FINISHPAGE_SHOWREADME_FUNCTION CreateDesktopShortcut

!insertmacro MUI_PAGE_WELCOME
!insertmacro MUI_PAGE_DIRECTORY
!insertmacro MUI_PAGE_INSTFILES
!insertmacro MUI_PAGE_FINISH
!insertmacro MUI_UNPAGE_CONFIRM
!insertmacro MUI_UNPAGE_INSTFILES
!insertmacro MUI_LANGUAGE "English"

Function CreateDesktopShortcut
  CreateShortCut "$DESKTOP\${APP_NAME}.lnk" "$INSTDIR\${GUI_EXE}" "" "$INSTDIR\${GUI_EXE}" 0
FunctionEnd

Section "BatchLens" SecMain
  SectionIn RO
  SetOutPath "$INSTDIR"
  ; An older version's library folder is removed first so no stale DLL is left beside the new ones.
  RMDir /r "$INSTDIR\_internal"
  File /r "${BUNDLE_DIR}\*.*"
  WriteUninstaller "$INSTDIR\Uninstall.exe"

  CreateShortCut "$SMPROGRAMS\${APP_NAME}.lnk" "$INSTDIR\${GUI_EXE}" "" "$INSTDIR\${GUI_EXE}" 0 \
    SW_SHOWNORMAL "" "Run a PyTorch image model over a folder of images"

  ; "Installed apps" / "Programs and Features" entry for this user.
  WriteRegStr HKCU "${UNINSTALL_KEY}" "DisplayName" "${APP_NAME}"
  WriteRegStr HKCU "${UNINSTALL_KEY}" "DisplayVersion" "${VERSION}"
  WriteRegStr HKCU "${UNINSTALL_KEY}" "Publisher" "BatchLens developers"
  WriteRegStr HKCU "${UNINSTALL_KEY}" "DisplayIcon" "$INSTDIR\${GUI_EXE}"
  WriteRegStr HKCU "${UNINSTALL_KEY}" "InstallLocation" "$INSTDIR"
  WriteRegStr HKCU "${UNINSTALL_KEY}" "UninstallString" '"$INSTDIR\Uninstall.exe"'
  WriteRegStr HKCU "${UNINSTALL_KEY}" "QuietUninstallString" '"$INSTDIR\Uninstall.exe" /S'
  WriteRegDWORD HKCU "${UNINSTALL_KEY}" "NoModify" 1
  WriteRegDWORD HKCU "${UNINSTALL_KEY}" "NoRepair" 1
  ${GetSize} "$INSTDIR" "/S=0K" $0 $1 $2
  IntFmt $0 "0x%08X" $0
  WriteRegDWORD HKCU "${UNINSTALL_KEY}" "EstimatedSize" "$0"
SectionEnd

Section "Uninstall"
  Delete "$SMPROGRAMS\${APP_NAME}.lnk"
  Delete "$DESKTOP\${APP_NAME}.lnk"
  ; Only what the installer put there: the user may have chosen a folder that holds other files.
  RMDir /r "$INSTDIR\_internal"
  Delete "$INSTDIR\batchlens.exe"
  Delete "$INSTDIR\${GUI_EXE}"
  Delete "$INSTDIR\Uninstall.exe"
  RMDir "$INSTDIR"
  DeleteRegKey HKCU "${UNINSTALL_KEY}"
SectionEnd
